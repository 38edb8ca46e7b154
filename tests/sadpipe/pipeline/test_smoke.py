"""CI smoke test: the embedded pipeline (pipelines/toy_sad.toml, what `sadpipe demo` runs) end
to end at toy size on its default path, the zoo teacher (sadpipe/zoo/toy_teacher.pt, given, not
trained): every artifact and the report's structure, then a second run that skips everything.
The path that trains its own teacher (`sadpipe demo --train-teacher`) runs once more, briefly."""
import importlib.util
import json

import pytest
from click.testing import CliRunner

from sadpipe.commands.run import command as run_command
from sadpipe.pipeline import find_pipeline
from sadpipe.pipeline.shipped import SHIPPED_DIR
from sadpipe.zoo import ZOO_DIR

STAGES = ["data", "student", "pseudo_label", "cache_labeled", "cache_pseudo",
          "student_sad", "eval_teacher", "eval_student", "eval_student_sad"]
TOY_SIZE = ("data.num_train=8", "data.num_unlabeled=4", "data.num_val=4",
            "vars.teacher_iters=2", "vars.student_iters=2", "vars.distill_iters=2")
STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _missing() -> list[str]:
    missing = [f"sadpipe.commands.{m}" for m in ("pseudo_label", "cache_logits")
               if importlib.util.find_spec(f"sadpipe.commands.{m}") is None]
    from sadpipe.commands.train import command as train_command

    if "teacher_shards" not in {p.name for p in train_command.params}:
        missing.append("train --teacher-shards")
    if not (SHIPPED_DIR / "toy_student_sad.toml").exists():
        missing.append("pipelines/toy_student_sad.toml")
    return missing


pytestmark = pytest.mark.skipif(bool(_missing()), reason=f"not installed yet: {_missing()}")


def _run(workdir, *extra):
    args = [str(find_pipeline("toy_sad")), "--workdir", str(workdir)]
    for item in TOY_SIZE + extra:
        args += ["--set", item]
    return CliRunner().invoke(run_command, args)


def test_embedded_pipeline_end_to_end(tmp_path, stages_in_process):
    workdir = tmp_path / "demo"
    result = _run(workdir, "vars.eval_period=1")          # the students' val AP at each step
    assert result.exit_code == 0, result.output
    state = json.loads((workdir / "state.json").read_text())["stages"]
    assert list(state) == STAGES
    assert all(state[name]["status"] == "done" for name in STAGES)
    assert not (workdir / "teacher").exists()                      # the zoo's teacher, not trained
    manifest = json.loads((workdir / "cache" / "pseudo" / "manifest.json").read_text())
    assert f"--teacher {ZOO_DIR / 'toy_teacher.pt'} " in manifest["command"]
    for name in STAGES:
        assert (workdir / "logs" / f"{name}.log").stat().st_size > 0
    for path in ("data/annotations/train.json", "data/annotations/val.json",
                 "data/annotations/unlabeled.json",
                 "student/model_final.pt", "student_sad/model_final.pt", "pseudo/pseudo.json",
                 "cache/labeled/manifest.json", "cache/pseudo/manifest.json",
                 "eval/teacher/metrics.json", "eval/student/metrics.json",
                 "eval/student_sad/metrics.json", "report.md", "report.json", "pr_curves.png"):
        assert (workdir / path).is_file(), path
    pseudo = json.loads((workdir / "pseudo" / "pseudo.json").read_text())
    assert pseudo["info"]["images_root"] == str(workdir / "data" / "images")  # ${data.images_root}

    report = json.loads((workdir / "report.json").read_text())
    assert set(report["main_results"]) == {
        "student_model", "student_baseline_AP", "teacher_model", "teacher_baseline_AP",
        "student_distilled_AP", "gain_over_baseline_AP", "gap_to_teacher_AP"}
    for role, stage in (("teacher", "eval_teacher"), ("baseline", "eval_student"),
                        ("distilled", "eval_student_sad")):
        eval_metrics = json.loads((workdir / "eval" / stage[5:] / "metrics.json").read_text())
        assert report["models"][role] == {"model": report["models"][role]["model"], "stage": stage,
                                          **{k: eval_metrics["bbox"][k] for k in STATS},
                                          "images_per_s": eval_metrics["inference"]["images_per_s"]}
    for cache in ("cache_labeled", "cache_pseudo"):
        manifest = json.loads((workdir / "cache" / cache[6:] / "manifest.json").read_text())
        assert report["caches"][cache]["samples"] == manifest["totals"]["samples"] > 0
        assert report["caches"][cache]["views"] == 2 * manifest["totals"]["samples"]
    rows = {row["name"]: row for row in report["stages"]}
    assert list(rows) == ["data", "teacher"] + STAGES[1:]
    assert rows["teacher"]["status"] == "given" and rows["teacher"]["wall_s"] is None
    assert all(rows[name]["wall_s"] > 0 for name in STAGES)
    assert report["models"]["teacher"]["AP"] > 0                    # the zoo teacher has learned
    markdown = (workdir / "report.md").read_text()
    assert "| Student model | Baseline mAP | Teacher model | Baseline mAP | " \
           "Student mAP after distillation |" in markdown
    assert (workdir / "pr_curves.png").read_bytes()[:4] == b"\x89PNG"
    gallery = report["gallery"]                                     # pictures, by default
    assert len(gallery["val"]) == 3 and len(gallery["pseudo_labels"]) == 3
    assert all((workdir / row[role]).is_file() for row in gallery["val"]
               for role in ("teacher", "baseline", "distilled"))
    assert (workdir / "gallery.png").read_bytes()[:4] == b"\x89PNG"
    assert "](gallery.png)" in markdown
    # the students' training curves, from their runs' metrics.jsonl: val AP after both steps
    runs = report["training_curves"]["runs"]
    assert list(runs) == ["baseline", "distilled"]
    for role, run in (("baseline", "student"), ("distilled", "student_sad")):
        records = [json.loads(line) for line in (workdir / run / "metrics.jsonl").read_text().splitlines()]
        assert [r["iteration"] for r in records if "val_AP" in r] == [1, 2]
        best = max((r for r in records if "val_AP" in r), key=lambda r: r["val_AP"])
        assert runs[role]["best_val_AP"] == best["val_AP"]
        assert runs[role]["best_iteration"] == best["iteration"]
        assert (workdir / run / "model_best.pt").is_file() and (workdir / run / "curves.png").is_file()
    assert (workdir / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "](training_curves.png)" in markdown

    again = _run(workdir, "vars.eval_period=1")
    assert again.exit_code == 0, again.output
    assert "0 of 10 stages ran" in again.output


def test_embedded_pipeline_trains_its_own_teacher(tmp_path, stages_in_process):
    workdir = tmp_path / "demo"
    result = _run(workdir, 'data.teacher_checkpoint=""', "data.num_val=2")
    assert result.exit_code == 0, result.output
    state = json.loads((workdir / "state.json").read_text())["stages"]
    assert list(state) == ["data", "teacher"] + STAGES[1:]
    assert state["teacher"]["status"] == "done"
    manifest = json.loads((workdir / "cache" / "pseudo" / "manifest.json").read_text())
    assert f"--teacher {workdir / 'teacher' / 'model_final.pt'} " in manifest["command"]
