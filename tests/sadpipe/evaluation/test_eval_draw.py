"""`sadpipe eval --draw N` and `sadpipe pseudo-label --draw N` on tiny generated images with an
untrained tiny detector: N pictures, the same images for the same seed whatever the model,
nothing for --draw 0, one-line errors."""
import json

import pytest
from click.testing import CliRunner
from PIL import Image

from sadpipe.cli import cli
from sadpipe.evaluation import pictures
from sadpipe.evaluation.draw import choose_images, class_colour, picture_name, upscale_factor
from tests.sadpipe.conftest import assert_one_line_error, make_tiny_checkpoint, write_tiny_coco

NUM_IMAGES = 6
DRAW = 3


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(annotations, images dir, two different checkpoints) shared by the tests."""
    root = tmp_path_factory.mktemp("draw")
    annotations, images = write_tiny_coco(root / "data", num_images=NUM_IMAGES)
    models = [make_tiny_checkpoint(root / f"m{seed}.pt", seed=seed, conv_gain=8.0,
                                   cls_gain=4.0) for seed in (0, 1)]
    return annotations, images, models


def run(command, *args):
    return CliRunner().invoke(cli, [command, *map(str, args)])


def drawn(folder):
    return sorted(p.name for p in (folder / pictures.DRAWINGS_DIR).iterdir())


def test_eval_draws_the_same_images_for_every_model(data, tmp_path):
    annotations, images, models = data
    names = []
    for i, model in enumerate(models):
        out = tmp_path / f"eval{i}"
        result = run("eval", "--checkpoint", model, "--annotations", annotations,
                     "--images", images, "--out", out, "--draw", DRAW, "--quiet")
        assert result.exit_code == 0, result.output
        names.append(drawn(out))
    expected = [picture_name(i) for i in choose_images(range(1, NUM_IMAGES + 1), DRAW, 0)]
    assert names == [expected, expected]
    picture = Image.open(tmp_path / "eval0" / pictures.DRAWINGS_DIR / expected[0])
    factor = upscale_factor(96, 64)
    assert picture.size == (96 * factor, 64 * factor) and picture.format == "PNG"


def test_eval_draws_the_detections_it_is_given(data, tmp_path):
    """--detections with --images: a box of a known class at a known place is drawn there."""
    annotations, images, _ = data
    detections = tmp_path / "dets.json"
    detections.write_text(json.dumps([
        {"image_id": 1, "category_id": 5, "bbox": [10, 8, 40, 30], "score": 0.8},
        {"image_id": 1, "category_id": 2, "bbox": [60, 30, 20, 20], "score": 0.1}]))
    out = tmp_path / "out"
    result = run("eval", "--detections", detections, "--annotations", annotations,
                 "--images", images, "--out", out, "--draw", NUM_IMAGES, "--draw-seed", 3)
    assert result.exit_code == 0, result.output
    assert f"drew {NUM_IMAGES} images" in result.output
    assert drawn(out) == [picture_name(i) for i in range(1, NUM_IMAGES + 1)]
    picture = Image.open(out / pictures.DRAWINGS_DIR / picture_name(1)).convert("RGB")
    factor = upscale_factor(96, 64)
    disc = class_colour(1)                      # category 5 is class 1 (ids 2, 5)
    assert picture.getpixel((10 * factor, 23 * factor)) == disc     # left edge
    assert picture.getpixel((50 * factor - 1, 23 * factor)) == disc  # right edge
    square = class_colour(0)                    # scores 0.1 < --draw-score 0.3: not drawn
    assert picture.getpixel((60 * factor, 40 * factor)) != square


def test_draw_zero_writes_no_drawings(data, tmp_path):
    annotations, images, models = data
    out = tmp_path / "out"
    result = run("eval", "--checkpoint", models[0], "--annotations", annotations,
                 "--images", images, "--out", out, "--draw", 0, "--quiet")
    assert result.exit_code == 0, result.output
    assert (out / "metrics.json").is_file() and not (out / pictures.DRAWINGS_DIR).exists()


def test_draw_without_images_is_a_one_line_error(data, tmp_path):
    annotations, _, _ = data
    detections = tmp_path / "dets.json"
    detections.write_text("[]")
    out = tmp_path / "out"
    result = run("eval", "--detections", detections, "--annotations", annotations,
                 "--out", out, "--draw", 2)
    assert_one_line_error(result, "--draw needs --images")
    result = run("eval", "--detections", detections, "--annotations", annotations,
                 "--images", tmp_path / "nowhere", "--out", out, "--draw", 2)
    assert_one_line_error(result, "nowhere: images folder not found")
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--draw-score", "0.5"], "--draw-score: only used with --draw"),
    (["--draw-seed", "1"], "--draw-seed: only used with --draw"),
    (["--draw", "-1"], "Invalid value for '--draw'"),
    (["--draw", "1", "--draw-score", "2"], "Invalid value for '--draw-score'"),
])
def test_draw_usage_errors(data, tmp_path, args, message):
    annotations, images, models = data
    result = run("eval", "--checkpoint", models[0], "--annotations", annotations,
                 "--images", images, "--out", tmp_path / "out", *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_pseudo_label_draws_next_to_its_output(data, tmp_path):
    _, images, models = data
    out = tmp_path / "pseudo" / "pseudo.json"
    result = run("pseudo-label", "--teacher", models[0], "--images", images, "--out", out,
                 "--device", "cpu", "--draw", DRAW, "--draw-seed", 1, "--quiet")
    assert result.exit_code == 0, result.output
    expected = [picture_name(i) for i in choose_images(range(1, NUM_IMAGES + 1), DRAW, 1)]
    assert drawn(out.parent) == expected
    assert sorted(p.name for p in out.parent.iterdir()) == [pictures.DRAWINGS_DIR, out.name]
    # the best pseudo-label of a drawn image is drawn last: its left edge has its colour
    dataset = json.loads(out.read_text())
    chosen = [ann for ann in dataset["annotations"]
              if picture_name(ann["image_id"]) in expected]
    assert chosen, "the teacher should keep a box on a drawn image"
    best = max(chosen, key=lambda ann: ann["score"])
    x, y, _, h = best["bbox"]
    factor = upscale_factor(96, 64)
    picture = Image.open(out.parent / pictures.DRAWINGS_DIR / picture_name(best["image_id"]))
    colour = class_colour(0 if best["category_id"] == 2 else 1)
    assert picture.convert("RGB").getpixel((round(x * factor), round((y + h / 2) * factor))) \
        == colour


def test_pseudo_label_draw_zero_writes_no_drawings(data, tmp_path):
    _, images, models = data
    out = tmp_path / "pseudo.json"
    result = run("pseudo-label", "--teacher", models[0], "--images", images, "--out", out,
                 "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    assert [p.name for p in tmp_path.iterdir()] == [out.name]
    result = run("pseudo-label", "--teacher", models[0], "--images", images, "--out", out,
                 "--draw-seed", 2)
    assert result.exit_code == 2 and "--draw-seed: only used with --draw" in result.output


def test_help_text_names_the_faint_floor():
    """pseudo-label --help states the floor the pictures use (flattened: the text wraps)."""
    help_text = " ".join(run("pseudo-label", "--help").output.split())
    assert f"those scoring from {pictures.FAINT_FLOOR:g} up to --score-thresh faint" in help_text
    for command in ("eval", "pseudo-label"):
        result = run(command, "--help")
        assert "--draw N" in result.output and "--draw-seed" in result.output
