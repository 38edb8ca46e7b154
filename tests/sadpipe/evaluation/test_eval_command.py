"""`sadpipe eval --detections ...` through click, including every kind of bad input."""
import json

import pytest
from click.testing import CliRunner

from sadpipe.cli import cli
from tests.sadpipe.evaluation.conftest import CAT, FALSE_POSITIVE, perfect_detections, tiny_gt, write_json


def run_eval(*args):
    return CliRunner().invoke(cli, ["eval", *map(str, args)])


def assert_one_line_error(result, *fragments):
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit)  # not an uncaught exception
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_evaluates_a_results_file(tmp_path, gt_path):
    dets = write_json(tmp_path / "dets.json", perfect_detections(0.8) + [FALSE_POSITIVE])
    out = tmp_path / "nested" / "out"
    result = run_eval("--detections", dets, "--annotations", gt_path, "--out", out)
    assert result.exit_code == 0, result.output
    assert "AP50" in result.output and "83.3" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["bbox"]["AP50"] == pytest.approx(5 / 6, abs=1e-12)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "pr_curve.json",
                                                     "pr_curve.png"]


def test_quiet_prints_nothing(tmp_path, gt_path):
    dets = write_json(tmp_path / "dets.json", [])
    result = run_eval("--detections", dets, "--annotations", gt_path, "--out", tmp_path / "o",
                      "--quiet")
    assert result.exit_code == 0 and result.output == ""
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["bbox"]["AP"] == 0.0


@pytest.mark.parametrize("args, message", [
    ([], "exactly one of --checkpoint or --detections"),
    (["--detections", "d.json", "--checkpoint", "m.pt"], "exactly one of"),
    (["--checkpoint", "m.pt"], "--checkpoint needs --images"),
    (["--detections", "d.json", "--images", "imgs"], "--images: only used with --checkpoint"),
    (["--detections", "d.json", "--batch-size", "2"], "--batch-size: only used with"),
])
def test_usage_errors(tmp_path, args, message):
    result = run_eval(*args, "--annotations", "gt.json", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "out").exists()


def gt_with(edit):
    """Writes the tiny ground truth after ``edit(gt)``."""
    def write(path):
        gt = tiny_gt()
        edit(gt)
        write_json(path, gt)
    return write


def annotation_with(index, **fields):
    return gt_with(lambda gt: gt["annotations"][index].update(fields))


def no_file(path):
    pass


@pytest.mark.parametrize("write_gt, fragments", [
    (no_file, ["gt.json: file not found"]),
    (lambda path: path.write_text('{"images": [}'), ["gt.json: not valid JSON", "line 1"]),
    (annotation_with(1, image_id=99), ["gt.json: annotations[1].image_id 99 is not in images"]),
    (annotation_with(2, category_id=99),
     ["gt.json: annotations[2].category_id 99 is not in categories"]),
    (annotation_with(0, bbox=[10, 10, 0, 20]),
     ["gt.json: annotations[0].bbox [10, 10, 0, 20] has non-positive width or height"]),
    (annotation_with(0, bbox=[10, 10, 20, -1]), ["annotations[0].bbox", "non-positive"]),
    (annotation_with(2, bbox=[60, 50, 50, 40]),
     ["gt.json: annotations[2].bbox [60, 50, 50, 40] is outside the 100x80 image"]),
    (gt_with(lambda gt: gt.pop("images")), ["gt.json: 'images' is missing"]),
    (gt_with(lambda gt: gt.pop("categories")), ["gt.json: 'categories' is missing"]),
])
def test_bad_annotations(tmp_path, write_gt, fragments):
    gt_path = tmp_path / "gt.json"
    write_gt(gt_path)
    dets = write_json(tmp_path / "dets.json", perfect_detections())
    result = run_eval("--detections", dets, "--annotations", gt_path, "--out", tmp_path / "out")
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, fragments", [
    (None, ["dets.json: file not found"]),
    ("[{]", ["dets.json: not valid JSON"]),
    (json.dumps({"image_id": 10}), ["dets.json: expected a JSON list"]),
    (json.dumps([{"image_id": 10, "category_id": CAT, "score": 0.5}]),
     ["dets.json: [0].bbox is missing"]),
    (json.dumps(perfect_detections() + [
        {"image_id": 11, "category_id": CAT, "bbox": [0, 0, 5, 5], "score": 0.5}]),
     ["dets.json: [4].image_id 11 is not an image of", "gt.json"]),
    (json.dumps([{"image_id": 10, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}]),
     ["dets.json: [0].category_id 1 is not a category of", "gt.json"]),
    (json.dumps([{"image_id": 10, "category_id": CAT, "bbox": [0, 0, 5, 5], "score": "high"}]),
     ["dets.json: [0].score must be a finite number"]),
])
def test_bad_detections_file(tmp_path, gt_path, content, fragments):
    dets = tmp_path / "dets.json"
    if content is not None:
        dets.write_text(content)
    result = run_eval("--detections", dets, "--annotations", gt_path, "--out", tmp_path / "out")
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "out").exists()


def test_out_is_a_file(tmp_path, gt_path):
    dets = write_json(tmp_path / "dets.json", perfect_detections())
    (tmp_path / "taken").write_text("x")
    result = run_eval("--detections", dets, "--annotations", gt_path,
                      "--out", tmp_path / "taken" / "out")
    assert_one_line_error(result, "taken is a file")


def test_existing_outputs_survive_a_failed_run(tmp_path, gt_path):
    out = tmp_path / "out"
    good = write_json(tmp_path / "good.json", perfect_detections())
    assert run_eval("--detections", good, "--annotations", gt_path, "--out", out).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = write_json(tmp_path / "bad.json", [{"image_id": 10}])
    result = run_eval("--detections", bad, "--annotations", gt_path, "--out", out)
    assert_one_line_error(result, "bad.json: [0].category_id is missing")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_checkpoint_and_images_are_checked_first(tmp_path, gt_path):
    result = run_eval("--checkpoint", tmp_path / "model.pt", "--images", tmp_path,
                      "--annotations", gt_path, "--out", tmp_path / "out")
    assert_one_line_error(result, "model.pt: checkpoint file not found")
    (tmp_path / "model.pt").write_bytes(b"")
    result = run_eval("--checkpoint", tmp_path / "model.pt", "--images", tmp_path / "imgs",
                      "--annotations", gt_path, "--out", tmp_path / "out")
    assert_one_line_error(result, "imgs: images folder not found")
    assert not (tmp_path / "out").exists()
