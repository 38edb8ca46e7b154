"""The shipped custom_sad_gpu pipeline (real models, real resolution, CUDA, torchrun): its
dry run wires every stage as the README says (processes, input size, precision, the teacher's
start), its train configs agree with each other where distillation needs it, and it runs end
to end on the CPU at tiny size (64 px, two iterations, untrained bodies: nothing downloaded)."""
import json

import pytest
from click.testing import CliRunner

from sadpipe.commands.run import command as run_command
from sadpipe.config import load_config
from sadpipe.engine.trainer import model_spec_from_config
from sadpipe.pipeline import find_pipeline, load_pipeline
from sadpipe.pipeline.work import command_options
from tests.sadpipe.pipeline.test_custom import CLASS_ORDER
from tests.sadpipe.pipeline.test_smoke import STAGES, _missing

pytestmark = pytest.mark.skipif(bool(_missing()), reason=f"not installed yet: {_missing()}")

PARALLEL = ("teacher", "student", "pseudo_label", "cache_labeled", "cache_pseudo", "student_sad")
TRAIN_STAGES = ("teacher", "student", "student_sad")
CPU_TINY = ("vars.device=cpu", "vars.pretrained=false", "vars.amp=off", "vars.num_workers=0",
            "vars.min_size=64", "vars.max_size=96", "vars.images_per_batch=2", "vars.draw_images=0",
            "vars.teacher_iters=2", "vars.student_iters=2", "vars.distill_iters=2",
            "vars.teacher_steps=[1]", "vars.student_steps=[1]", "vars.distill_steps=[1]",
            "vars.eval_period=2")          # evaluated once, after the last iteration


def _paths(root):
    sets = [f"data.root={root}"]
    for split in ("train", "val", "unlabeled"):
        sets += [f"data.{split}_annotations=labels/{split}.json", f"data.{split}_images=pictures/{split}"]
    return tuple(sets)


def _train_config(stage) -> dict:
    options = command_options(stage)
    return load_config(options["config_path"], options["overrides"])


def test_dry_run_wires_gpus_size_precision_and_the_teacher_start(tmp_path):
    overrides = (*_paths(tmp_path), "vars.gpus=4", "vars.min_size=800", "vars.max_size=1333",
                 "vars.student_arch=mobilenet_v3_large", "vars.teacher_init=coco_r50.pt",
                 "vars.amp=fp16", "vars.teacher_precision=bf16")
    pipeline = load_pipeline(find_pipeline("custom_sad_gpu"), workdir=tmp_path / "w", overrides=overrides)
    assert [s.name for s in pipeline.stages] == ["data", "teacher", *STAGES[1:]]
    for stage in pipeline.stages[1:]:
        argv = stage.argv()
        under_torchrun = "torch.distributed.run" in argv and "--nproc_per_node=4" in argv
        assert under_torchrun == (stage.name in PARALLEL), stage.name

    configs = {name: _train_config(pipeline.stage(name)) for name in TRAIN_STAGES}
    data = pipeline.stages[0].outputs
    for name, cfg in configs.items():          # every run at the pipeline's size and precision,
        assert cfg["data"]["val_annotations"] == str(data["val_annotations"]), name   # watched
        assert cfg["data"]["val_images"] == str(data["val_images"]) and cfg["train"]["eval_period"] == 500
        assert (cfg["input"]["min_size"], cfg["input"]["max_size"]) == (800, 1333), name
        assert cfg["input"]["train_min_sizes"] == [800] and cfg["solver"]["amp"] == "fp16", name
        assert cfg["train"]["device"] == "auto" and cfg["model"]["pretrained"] is True, name
    assert configs["teacher"]["model"]["arch"] == "resnet50"
    assert configs["teacher"]["model"]["init"] == "coco_r50.pt"
    assert configs["teacher"]["model"]["init_reset_classes"] is True
    assert {configs[s]["model"]["arch"] for s in ("student", "student_sad")} == {"mobilenet_v3_large"}
    assert configs["student_sad"]["distill"]["teacher_precision"] == "bf16"
    for name in ("pseudo_label", "cache_labeled", "cache_pseudo"):
        assert command_options(pipeline.stage(name))["precision"] == "bf16"
    for name in ("cache_labeled", "cache_pseudo"):   # the cache holds the student's views
        options = command_options(pipeline.stage(name))
        assert (options["min_size"], options["max_size"]) == (800, 1333)
    categories = [{"id": i, "name": str(i)} for i in CLASS_ORDER]
    specs = {name: model_spec_from_config(cfg, categories) for name, cfg in configs.items()}
    # distillation is anchor by anchor: the teacher's anchors and input are the students'
    assert specs["teacher"].variant() == specs["student"].variant() == specs["student_sad"].variant()
    assert specs["teacher"].preprocessing == specs["student_sad"].preprocessing
    report = pipeline.report.models
    assert report["teacher"].model == "RetinaNet R-50 (800)"
    assert report["distilled"].model == "RetinaNet mobilenet_v3_large (800)"

    args = [str(find_pipeline("custom_sad_gpu")), "--workdir", str(tmp_path / "w"), "--dry-run"]
    for item in overrides:
        args += ["--set", item]
    result = CliRunner().invoke(run_command, args)
    assert result.exit_code == 0, result.output
    assert " 2. teacher [4 processes]: sadpipe train " in result.output
    assert "10. eval_student_sad: sadpipe eval " in result.output
    assert not (tmp_path / "w").exists()


def test_cpu_smoke_end_to_end(dataset, tmp_path, stages_in_process):
    workdir = tmp_path / "work"
    args = [str(find_pipeline("custom_sad_gpu")), "--workdir", str(workdir)]
    for item in (*_paths(dataset), *CPU_TINY):
        args += ["--set", item]
    result = CliRunner().invoke(run_command, args)
    assert result.exit_code == 0, result.output
    state = json.loads((workdir / "state.json").read_text())["stages"]
    assert list(state) == ["teacher", *STAGES[1:]]
    assert all(record["status"] == "done" for record in state.values())

    report = json.loads((workdir / "report.json").read_text())
    assert report["models"]["teacher"]["model"] == "RetinaNet R-50 (64)"
    assert report["models"]["distilled"]["model"] == "RetinaNet resnet18 (64)"
    for run, arch in (("teacher", "resnet50"), ("student", "resnet18"), ("student_sad", "resnet18")):
        cfg = load_config(workdir / run / "config.toml")       # the run's resolved config
        assert (cfg["model"]["arch"], cfg["input"]["min_size"], cfg["train"]["eval_period"]) == (arch, 64, 2)
        assert (workdir / run / "model_best.pt").is_file() and (workdir / run / "curves.png").is_file()
    assert list(report["training_curves"]["runs"]) == ["baseline", "distilled"]
    manifest = json.loads((workdir / "cache" / "labeled" / "manifest.json").read_text())
    assert [c["id"] for c in manifest["header"]["categories"]] == CLASS_ORDER
