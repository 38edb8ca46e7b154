"""The run report from hand-written evaluation results, shard manifests and stage records."""
import json

import pytest

from sadpipe.errors import UserError
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


@pytest.fixture
def reported(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(PIPELINE)
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
                                           **METRICS["eval_t"]}
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
    assert "| Big | teacher | 35.5 | 60.0 | 37.0 | 20.0 | 40.0 | n/a |" in markdown
    assert "| cache | 4 | 8 | 3.0 MB | 1.5 kB | 18.0 kB | 12.0x |" in markdown
    assert "| 5 | eval_d | eval | done | 2 | 00:55 |" in markdown
    assert "| | total | | | | 02:35 |" in markdown
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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
