"""The run report from hand-written evaluation results, shard manifests and stage records."""
import json

import numpy as np
import pytest
from PIL import Image

from sadpipe.errors import UserError
from sadpipe.evaluation.draw import picture_name
from sadpipe.pipeline import find_pipeline
from sadpipe.pipeline.report import cache_sizes, human_bytes, write_report
from sadpipe.pipeline.spec import load_pipeline
from sadpipe.pipeline.state import FRESH, RESUME, RunState
from tests.sadpipe.pipeline.conftest import dedent

STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
METRICS = {  # eval stage: bbox numbers (fractions)
    "eval_t": dict(zip(STATS, (0.355, 0.60, 0.37, 0.20, 0.40, None))),
    "eval_b": dict(zip(STATS, (0.20, 0.41, 0.18, 0.05, 0.25, 0.31))),
    "eval_d": dict(zip(STATS, (0.333, 0.58, 0.34, 0.15, 0.38, 0.45))),
}
IOUS = [0.5 + 0.05 * i for i in range(10)]
RECALL = [i / 100 for i in range(101)]


def _eval_stage(name):
    return dedent(f"""
        [[stages]]
        name = "{name}"
        command = "eval"
        args = []
        [stages.outputs]
        metrics = "${{workdir}}/{name}/metrics.json"
        pr_curve = "${{workdir}}/{name}/pr.json"
    """)


PIPELINE = dedent("""
    [pipeline]
    name = "reported"
    [data]
    source = "toy"

    [[stages]]
    name = "cache"
    command = "cache-logits"
    args = []
    outputs = { manifest = "${workdir}/cache/manifest.json" }
""") + "".join(_eval_stage(n) for n in METRICS) + dedent("""
    [report]
    teacher = { model = "Big", eval = "eval_t" }
    baseline = { model = "Small", eval = "eval_b" }
    distilled = { model = "Small", eval = "eval_d" }
    caches = ["cache"]
""")


PSEUDO_STAGE = dedent("""
    [[stages]]
    name = "pseudo"
    command = "pseudo-label"
    args = []
    outputs = { labels = "${workdir}/pseudo/pseudo.json" }
""")
WITH_PSEUDO = PIPELINE.replace("[report]", PSEUDO_STAGE + "[report]") + \
    'pseudo_labels = "pseudo"\n'


@pytest.fixture
def reported(tmp_path):
    return _reported(tmp_path, PIPELINE)


def _reported(tmp_path, text):
    path = tmp_path / "p.toml"
    path.write_text(text)
    pipeline = load_pipeline(path, workdir=tmp_path / "w")
    for name, bbox in METRICS.items():
        outputs = pipeline.stage(name).outputs
        outputs["metrics"].parent.mkdir(parents=True)
        outputs["metrics"].write_text(json.dumps({"bbox": {**bbox, "AR1": 0.1},
                                                  "per_class_AP": {}}))
        outputs["pr_curve"].write_text(json.dumps({
            "iou_thresholds": IOUS, "recall": RECALL,
            "precision": [[max(0.0, 1 - r - 0.05 * t) for r in RECALL] for t in range(10)]}))
    manifest = pipeline.stage("cache").outputs["manifest"]
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"totals": {
        "shards": 1, "samples": 4, "views": 8, "skipped": 0, "shard_bytes": 3_000_400,
        "payload_bytes": 12_000, "payload_bytes_per_view": 1500.0,
        "dense_fp16_bytes_per_view": 18_000.0, "compression_vs_fp16": 12.0}}))
    state = RunState(pipeline.workdir)
    for i, stage in enumerate(pipeline.stages):
        state.start(stage.name, fingerprint="f", command=[], mode=FRESH, log=tmp_path / "l")
        state.finish(stage.name, exit_code=0, wall_s=10.0 * (i + 1), ok=True)
    state.start("eval_d", fingerprint="f", command=[], mode=RESUME, log=tmp_path / "l")
    state.finish("eval_d", exit_code=0, wall_s=5.0, ok=True)
    return pipeline, state


def test_report_files_and_numbers(reported):
    pipeline, state = reported
    paths = write_report(pipeline, state)
    assert [p.name for p in paths] == ["report.json", "report.md", "pr_curves.png"]
    report = json.loads(paths[0].read_text())
    main = report["main_results"]
    assert (main["student_model"], main["teacher_model"]) == ("Small", "Big")
    assert main["student_baseline_AP"] == 0.20 and main["teacher_baseline_AP"] == 0.355
    assert main["student_distilled_AP"] == 0.333
    assert main["gain_over_baseline_AP"] == pytest.approx(0.133)
    assert main["gap_to_teacher_AP"] == pytest.approx(-0.022)
    assert report["models"]["teacher"] == {"model": "Big", "stage": "eval_t",
                                           **METRICS["eval_t"], "images_per_s": None}
    assert report["caches"]["cache"] == {"samples": 4, "views": 8, "bytes": 3_000_400,
                                         "bytes_per_view": 1500.0,
                                         "dense_fp16_bytes_per_view": 18_000.0,
                                         "compression_vs_fp16": 12.0}
    walls = {row["name"]: (row["status"], row["attempts"], row["wall_s"])
             for row in report["stages"]}
    assert walls == {"data": ("done", 1, 10.0), "cache": ("done", 1, 20.0),
                     "eval_t": ("done", 1, 30.0), "eval_b": ("done", 1, 40.0),
                     "eval_d": ("done", 2, 55.0)}
    assert report["total_wall_s"] == 155.0

    markdown = paths[1].read_text()
    assert ("| Student model | Baseline mAP | Teacher model | Baseline mAP | "
            "Student mAP after distillation |") in markdown
    assert "| Small | 20.0 | Big | 35.5 | 33.3 |" in markdown
    assert "+13.3 AP; vs teacher: -2.2 AP" in markdown
    assert "| Big | teacher | 35.5 | 60.0 | 37.0 | 20.0 | 40.0 | n/a | n/a |" in markdown
    assert "| cache | 4 | 8 | 3.0 MB | 1.5 kB | 18.0 kB | 12.0x |" in markdown
    assert "| 5 | eval_d | eval | done | 2 | 00:55 |" in markdown
    assert "| | total | | | | 02:35 |" in markdown
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["gallery"] is None                      # no stage drew pictures
    assert "gallery" not in markdown and not (pipeline.workdir / "gallery.png").exists()


def _draw(folder, ids, colour):
    """Fake ``--draw`` output: one plain picture per image id."""
    folder.mkdir(parents=True, exist_ok=True)
    for image_id in ids:
        Image.new("RGB", (60, 40), colour).save(folder / picture_name(image_id))


GALLERY_COLOURS = {"eval_t": (255, 0, 0), "eval_b": (0, 255, 0), "eval_d": (0, 0, 255)}
PSEUDO_COLOUR = (255, 255, 0)


def test_gallery_of_the_models_and_the_pseudo_labels(tmp_path):
    pipeline, state = _reported(tmp_path, WITH_PSEUDO)
    for stage, colour in GALLERY_COLOURS.items():
        ids = [3, 8, 21, 40] + ([99] if stage == "eval_t" else [])   # 99: the teacher's only
        _draw(pipeline.stage(stage).outputs["metrics"].parent / "drawings", ids, colour)
    _draw(pipeline.workdir / "pseudo" / "drawings", [5, 6], PSEUDO_COLOUR)

    paths = write_report(pipeline, state)
    assert paths[-1] == pipeline.workdir / "gallery.png"
    gallery = json.loads(paths[0].read_text())["gallery"]
    assert gallery["file"] == "gallery.png"
    assert [row["image"] for row in gallery["val"]] == [picture_name(i) for i in (3, 8, 21)]
    assert gallery["val"][0] == {"image": picture_name(3),
                                 "teacher": f"eval_t/drawings/{picture_name(3)}",
                                 "baseline": f"eval_b/drawings/{picture_name(3)}",
                                 "distilled": f"eval_d/drawings/{picture_name(3)}"}
    assert gallery["pseudo_labels"] == [f"pseudo/drawings/{picture_name(i)}" for i in (5, 6)]
    markdown = paths[1].read_text()
    assert "## Pictures" in markdown and "](gallery.png)" in markdown
    with Image.open(paths[-1]) as sheet:
        colours = set(map(tuple, np.asarray(sheet.convert("RGB")).reshape(-1, 3).tolist()))
    assert {*GALLERY_COLOURS.values(), PSEUDO_COLOUR} <= colours

    for stage in GALLERY_COLOURS:                 # pictures gone: so is the gallery
        for picture in (pipeline.stage(stage).outputs["metrics"].parent / "drawings").iterdir():
            picture.unlink()
    for picture in (pipeline.workdir / "pseudo" / "drawings").iterdir():
        picture.unlink()
    assert [p.name for p in write_report(pipeline, state)][-1] == "pr_curves.png"
    assert not (pipeline.workdir / "gallery.png").exists()


def test_bad_picture_is_a_one_line_error(tmp_path):
    pipeline, state = _reported(tmp_path, PIPELINE)
    for stage in GALLERY_COLOURS:
        folder = pipeline.stage(stage).outputs["metrics"].parent / "drawings"
        folder.mkdir()
        (folder / picture_name(1)).write_bytes(b"not a png")
    with pytest.raises(UserError, match="000000000001.png: cannot read this picture"):
        write_report(pipeline, state)


@pytest.mark.parametrize("value, message", [
    ('"nope"', "report.pseudo_labels: no stage 'nope'"),
    ('"eval_t"', "report.pseudo_labels: stage 'eval_t' needs the output 'labels'"),
    ("3", "report.pseudo_labels: must be a stage name"),
])
def test_bad_pseudo_labels_key(tmp_path, value, message):
    path = tmp_path / "p.toml"
    path.write_text(PIPELINE + f"pseudo_labels = {value}\n")
    with pytest.raises(UserError, match=message):
        load_pipeline(path, workdir=tmp_path / "w")


@pytest.mark.parametrize("name", ["toy_sad", "custom_sad"])
def test_shipped_pipelines_draw_the_gallery(name, tmp_path):
    """Every eval stage draws the same number of images with the same (default) seed, so
    they draw the same images; the pseudo-label stage draws too and feeds the gallery."""
    pipeline = load_pipeline(find_pipeline(name), workdir=tmp_path / "w")
    spec = pipeline.report
    draws = set()
    for entry in spec.models.values():
        args = pipeline.stage(entry.eval_stage).args
        assert "--draw-seed" not in args
        draws.add(args[args.index("--draw") + 1])
    pseudo = pipeline.stage(spec.pseudo_labels)
    assert pseudo.command == "pseudo-label"
    assert draws == {pseudo.args[pseudo.args.index("--draw") + 1]} and int(draws.pop()) > 0


GOOD_TOTALS = {"samples": 2, "views": 4, "shard_bytes": 10, "payload_bytes_per_view": 1.0,
               "dense_fp16_bytes_per_view": 2.0}


@pytest.mark.parametrize("totals, key", [
    (None, "totals: missing"),
    ({**GOOD_TOTALS, "samples": "2"}, "totals.samples"),
    ({k: v for k, v in GOOD_TOTALS.items() if k != "views"}, "totals.views"),
    ({**GOOD_TOTALS, "shard_bytes": 1.5}, "totals.shard_bytes"),
    ({**GOOD_TOTALS, "payload_bytes_per_view": -1}, "totals.payload_bytes_per_view"),
    ({**GOOD_TOTALS, "dense_fp16_bytes_per_view": None}, "totals.dense_fp16_bytes_per_view"),
])
def test_bad_manifest_names_file_and_key(tmp_path, totals, key):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"shards": []} if totals is None else {"totals": totals}))
    with pytest.raises(UserError, match=f"{path}: {key}".replace(".", r"\.")):
        cache_sizes(path)


def test_bad_metrics_file_names_file(reported):
    pipeline, state = reported
    path = pipeline.stage("eval_b").outputs["metrics"]
    path.write_text(json.dumps({"bbox": {"AP": "high"}}))
    with pytest.raises(UserError, match="metrics.json: bbox.AP: expected a number or null"):
        write_report(pipeline, state)
    assert not (pipeline.workdir / "report.json").exists()


@pytest.mark.parametrize("count, text", [(0, "0 B"), (999, "999 B"), (1000, "1.0 kB"),
                                         (1_534, "1.5 kB"), (18e6, "18.0 MB"),
                                         (8e12, "8.0 TB"), (3e15, "3000.0 TB")])
def test_human_bytes(count, text):
    assert human_bytes(count) == text


LIVE_AND_PAPER = PIPELINE.replace("[report]", _eval_stage("eval_l") + "[report]") + dedent("""
    distilled_live = { model = "Small", eval = "eval_l" }
    [report.paper]
    student_model = "R-50"
    student_baseline = 34.3
    teacher_model = "R-101"
    teacher_baseline = 36.0
    distilled = 36.5
""")


def test_live_teacher_row_paper_row_and_inference_speed(tmp_path):
    """The toy paper protocol's report: the live-teacher student beside the cached one, the
    paper's figures beside this run's, and each model's inference images/s."""
    pipeline, state = _reported(tmp_path, LIVE_AND_PAPER)
    live = pipeline.stage("eval_l").outputs
    live["metrics"].parent.mkdir(parents=True)
    live["metrics"].write_text(json.dumps({"bbox": {**METRICS["eval_d"], "AP": 0.340},
                                           "inference": {"images_per_s": 123.4}}))
    live["pr_curve"].write_text(pipeline.stage("eval_d").outputs["pr_curve"].read_text())
    state.start("eval_l", fingerprint="f", command=[], mode=FRESH, log=tmp_path / "l")
    state.finish("eval_l", exit_code=0, wall_s=1.0, ok=True)
    paths = write_report(pipeline, state)
    report = json.loads(paths[0].read_text())
    main = report["main_results"]
    assert main["student_distilled_live_AP"] == 0.340
    assert main["cache_vs_live_AP"] == pytest.approx(0.333 - 0.340)
    assert report["paper"]["distilled"] == 36.5
    assert report["models"]["distilled_live"]["images_per_s"] == 123.4
    assert report["models"]["teacher"]["images_per_s"] is None      # not recorded
    markdown = paths[1].read_text()
    assert "| Small | 20.0 | Big | 35.5 | 33.3 |" in markdown
    assert "| R-50 (the paper, COCO) | 34.3 | R-101 | 36.0 | 36.5 |" in markdown
    assert "The paper: +2.2 AP; +0.5 AP." in markdown
    assert "vs from the live teacher (same seed and schedule): -0.7 AP (33.3 vs 34.0)" in markdown
    assert "| Small | distilled student (SAD, live teacher) | 34.0 |" in markdown
    assert markdown.count("| 123.4 |") == 1


@pytest.mark.parametrize("paper", ['{ student_model = "R-50" }',
                                   '{ student_model = "R-50", student_baseline = "34.3", '
                                   'teacher_model = "R-101", teacher_baseline = 36.0, distilled = 36.5 }'])
def test_bad_paper_row(tmp_path, paper):
    path = tmp_path / "p.toml"
    path.write_text(PIPELINE + f"paper = {paper}\n")
    with pytest.raises(UserError, match=r"report\.paper: must be"):
        load_pipeline(path, workdir=tmp_path / "w")


def test_students_training_curves(tmp_path):
    """The runs of the students' evaluated checkpoints (their metrics.jsonl) are drawn into
    training_curves.png and summed up in the report; the teacher's run is not a student's."""
    text = PIPELINE
    for stage, run in (("eval_t", "teacher"), ("eval_b", "student"), ("eval_d", "student_sad")):
        text = text.replace(f'name = "{stage}"\ncommand = "eval"\nargs = []',
                            f'name = "{stage}"\ncommand = "eval"\n'
                            f'args = ["--checkpoint", "${{workdir}}/{run}/model_final.pt"]')
    pipeline, state = _reported(tmp_path, text)
    logs = {"teacher": [{"iteration": 5, "loss": 9.0}],
            "student": [{"iteration": 2, "lr": 0.01, "loss": 2.0}, {"iteration": 4, "lr": 0.01, "loss": 1.5},
                        {"iteration": 4, "val_AP": 0.12}],
            "student_sad": [{"iteration": 2, "lr": 0.01, "loss": 3.0, "loss_adl": 0.5},
                            {"iteration": 2, "val_AP": 0.2}, {"iteration": 4, "lr": 0.01, "loss": 2.5},
                            {"iteration": 4, "val_AP": 0.18}]}
    for run, records in logs.items():
        (pipeline.workdir / run).mkdir(parents=True)
        (pipeline.workdir / run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    paths = write_report(pipeline, state)
    assert paths[-1] == pipeline.workdir / "training_curves.png"
    assert paths[-1].read_bytes()[:4] == b"\x89PNG"
    curves = json.loads(paths[0].read_text())["training_curves"]
    assert curves["file"] == "training_curves.png"
    assert curves["runs"] == {
        "baseline": {"metrics": str(pipeline.workdir / "student" / "metrics.jsonl"), "iterations": 4,
                     "last_loss": 1.5, "best_val_AP": 0.12, "best_iteration": 4},
        "distilled": {"metrics": str(pipeline.workdir / "student_sad" / "metrics.jsonl"), "iterations": 4,
                      "last_loss": 2.5, "best_val_AP": 0.2, "best_iteration": 2}}
    markdown = paths[1].read_text()
    assert "| baseline student | 4 | 1.5000 | 12.0 | 4 |" in markdown
    assert "| distilled student (SAD) | 4 | 2.5000 | 20.0 | 2 |" in markdown
    assert "](training_curves.png)" in markdown

    for run in ("student", "student_sad"):       # runs gone: so are the curves
        (pipeline.workdir / run / "metrics.jsonl").unlink()
    write_report(pipeline, state)
    assert not (pipeline.workdir / "training_curves.png").exists()
    assert json.loads(paths[0].read_text())["training_curves"] is None
