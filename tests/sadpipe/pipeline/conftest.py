"""A tiny real pipeline for the runner tests: toy-data (a handful of images) -> train (a few
iterations of the small student architecture at 64 px) -> eval; and the custom-layout dataset
of the custom pipelines' tests."""
import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sadpipe.commands.run import command as run_command
from tests.sadpipe.pipeline.test_custom import write_split

TRAIN_CONFIG = """\
[model]
arch = "toy_student"
anchor_size_factor = 1.0

[input]
min_size = 64
max_size = 128
train_min_sizes = [64]

[solver]
images_per_batch = 2
base_lr = 0.01
warmup_iters = 2
max_iter = 4
steps = [100]

[train]
device = "cpu"
log_period = 1
checkpoint_period = 2
"""

PIPELINE = """\
[pipeline]
name = "tiny"

[data]
source = "toy"
seed = 0
num_train = 6
num_unlabeled = 0
num_val = 4

[vars]
iters = 4

[[stages]]
name = "train"
command = "train"
args = ["--config", "${pipeline_dir}/tiny_train.toml", "--out", "${workdir}/train",
        "--set", "data.train_annotations=${data.train_annotations}",
        "--set", "data.train_images=${data.train_images}",
        "--set", "solver.max_iter=${vars.iters}"EXTRA_TRAIN_ARGS]
inputs = ["${pipeline_dir}/tiny_train.toml", "${data.train_annotations}", "${data.train_images}"]
outputs = { model = "${workdir}/train/model_final.pt" }
resume = ["--resume"]
clean = ["${workdir}/train"]

[[stages]]
name = "eval"
command = "eval"
args = ["--checkpoint", "${train.model}", "--annotations", "${data.val_annotations}",
        "--images", "${data.val_images}", "--out", "${workdir}/eval"]
inputs = ["${train.model}", "${data.val_annotations}", "${data.val_images}"]
outputs = { metrics = "${workdir}/eval/metrics.json", pr_curve = "${workdir}/eval/pr_curve.json" }
clean = ["${workdir}/eval"]

[report]
teacher = { model = "tiny A", eval = "eval" }
baseline = { model = "tiny B", eval = "eval" }
distilled = { model = "tiny C", eval = "eval" }
"""

STAGES = ("data", "train", "eval")


def write_tiny_pipeline(folder: Path, *, extra_train_args: tuple[str, ...] = ()) -> Path:
    """pipeline.toml + tiny_train.toml in ``folder``; returns the pipeline path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny_train.toml").write_text(TRAIN_CONFIG)
    extra = "".join(f", {json.dumps(a)}" for a in extra_train_args)
    path = folder / "pipeline.toml"
    path.write_text(PIPELINE.replace("EXTRA_TRAIN_ARGS", extra))
    return path


def run_cli(pipeline: Path, workdir: Path, *args: str):
    """``sadpipe run`` in this process (its stages are subprocesses)."""
    return CliRunner().invoke(run_command, [str(pipeline), "--workdir", str(workdir), *args])


def read_state(workdir: Path) -> dict:
    return json.loads((workdir / "state.json").read_text())["stages"]


@pytest.fixture(scope="module")
def completed(tmp_path_factory):
    """(pipeline path, workdir) after one complete run; copy the workdir before changing it."""
    root = tmp_path_factory.mktemp("tiny")
    pipeline = write_tiny_pipeline(root / "pipeline")
    workdir = root / "work"
    result = run_cli(pipeline, workdir)
    assert result.exit_code == 0, result.output
    return pipeline, workdir


@pytest.fixture
def workdir_copy(completed, tmp_path):
    """A private copy of the completed workdir (fingerprints are workdir-relative)."""
    pipeline, workdir = completed
    copy = tmp_path / "work"
    shutil.copytree(workdir, copy, symlinks=True)
    return pipeline, copy


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip()


@pytest.fixture
def stages_in_process(monkeypatch):
    """Run each one-process stage inside this test process instead of a child ``python -m
    sadpipe.cli``: the same command and arguments through the same click entry point, its
    output into the stage's log, without a fresh interpreter importing torch and torchvision
    (~4 s per stage). The end-to-end pipeline tests use it to stay within the suite's time;
    launching, logging and killing real child processes is what tests/sadpipe/pipeline/
    test_runner.py checks. Stages under torchrun still run as child processes."""
    import sys
    import time

    from sadpipe.cli import cli
    from sadpipe.pipeline import launch, runner

    def run(argv, log, *, append, on_start=None, on_tick=None):
        if argv[1:3] != ["-m", "sadpipe.cli"]:
            return launch.run_logged(argv, log, append=append, on_start=on_start, on_tick=on_tick)
        start = time.monotonic()
        with monkeypatch.context() as patch:   # the command line a child would see
            patch.setattr(sys, "argv", ["sadpipe", *argv[3:]])
            result = CliRunner().invoke(cli, argv[3:], catch_exceptions=False)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a" if append else "w") as out:
            out.write(f"{launch.LOG_HEADER}in-process: {' '.join(argv)}\n{result.output}")
        return result.exit_code, time.monotonic() - start

    monkeypatch.setattr(runner, "run_logged", run)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A COCO-format set in a user's own layout (see ``test_custom.write_split``): train, val
    and unlabeled splits, mixed image formats and sizes."""
    root = tmp_path_factory.mktemp("mine")
    rng = np.random.default_rng(12)
    for split, first_id in (("train", 101), ("val", 201), ("unlabeled", 301)):
        write_split(root, split, rng, first_id)
    return root
