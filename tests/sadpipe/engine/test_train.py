"""`sadpipe train` end to end on tiny data: outputs, resume after SIGKILL, refusals."""
import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from sadpipe.commands.train import command as train_command
from tests.sadpipe.conftest import kill_when_written, tiny_train_overrides, with_categories_reversed


def _args(ann, images, out, *extra, **overrides):
    args = ["--out", str(out)]
    for item in tiny_train_overrides(ann, images, **overrides):
        args += ["--set", item]
    return args + list(extra)


def _run_cli(args):
    return subprocess.Popen([sys.executable, "-m", "sadpipe.cli", "train", "--config", "/dev/null", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_train_writes_run_folder(tiny_coco, tmp_path):
    ann, images = tiny_coco
    out = tmp_path / "run"
    result = CliRunner().invoke(train_command, ["--config", "/dev/null", *_args(ann, images, out)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines] == [1, 2, 3, 4, 5, 6]
    assert {"lr", "loss", "loss_cls", "loss_box", "images_per_s"} <= set(lines[0])
    assert lines[0]["lr"] == pytest.approx(0.01 / 3) and lines[-1]["lr"] == pytest.approx(0.001)
    assert (out / "model_final.pt").exists() and (out / "config.toml").exists()
    payload = torch.load(out / "model_final.pt", weights_only=True)
    assert payload["model"]["categories"] == [{"id": 2, "name": "square"}, {"id": 5, "name": "disc"}]
    provenance = payload["provenance"]
    assert provenance["iterations"] == 6 and provenance["wall_time_s"] > 0
    assert provenance["data"]["labeled"]["annotations"] == str(ann)
    assert provenance["data"]["labeled"]["sha256"] == hashlib.sha256(ann.read_bytes()).hexdigest()
    assert provenance["data"]["labeled"]["images"] == 8 and "generator" not in provenance["data"]["labeled"]
    assert provenance["started_from"] == {}


@pytest.mark.numerics
def test_category_listing_order_does_not_change_the_model(tiny_coco, tmp_path):
    """The same data with its categories listed in another order trains the same weights and
    classes (it used to be refused: the model took the file's order, the dataset sorted)."""
    ann, images = tiny_coco
    reversed_ann = with_categories_reversed(ann, tmp_path / "reversed.json")
    for name, path in (("sorted", ann), ("reversed", reversed_ann)):
        result = CliRunner().invoke(train_command, ["--config", "/dev/null",
                                                    *_args(path, images, tmp_path / name)])
        assert result.exit_code == 0, result.output
    a = torch.load(tmp_path / "sorted" / "model_final.pt", weights_only=True)
    b = torch.load(tmp_path / "reversed" / "model_final.pt", weights_only=True)
    assert a["model"] == b["model"]
    assert [c["id"] for c in b["model"]["categories"]] == [2, 5]
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key


@pytest.mark.numerics
def test_resume_after_sigkill_matches_uninterrupted_run(tiny_coco, tmp_path):
    ann, images = tiny_coco
    ref = _run_cli(_args(ann, images, tmp_path / "ref", **{"solver.max_iter": 8}))
    assert ref.wait(timeout=300) == 0, ref.stderr.read().decode()

    out = tmp_path / "killed"
    proc = _run_cli(_args(ann, images, out, **{"solver.max_iter": 8}))
    kill_when_written(proc, out / "checkpoints" / "iter_0000004.pt")
    assert not (out / "model_final.pt").exists()
    resumed = _run_cli(_args(ann, images, out, "--resume", **{"solver.max_iter": 8}))
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()

    a, b = _weights(tmp_path / "ref" / "model_final.pt"), _weights(out / "model_final.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    iterations = [json.loads(x)["iteration"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert iterations == list(range(1, 9))


def test_refuses_out_holding_another_run(tiny_coco, tmp_path):
    ann, images = tiny_coco
    out = tmp_path / "run"
    runner = CliRunner()
    assert runner.invoke(train_command, ["--config", "/dev/null", *_args(ann, images, out)]).exit_code == 0
    again = runner.invoke(train_command, ["--config", "/dev/null", *_args(ann, images, out)])
    assert again.exit_code != 0 and "already holds a training run" in again.output
    other = runner.invoke(train_command, ["--config", "/dev/null",
                                          *_args(ann, images, out, "--resume", **{"solver.base_lr": 0.5})])
    assert other.exit_code != 0 and "different config (solver.base_lr" in other.output


@pytest.mark.parametrize("override, message", [
    ("solver.not_a_key=1", "unknown config key 'solver.not_a_key'"),
    ("data.train_annotations=\"/nonexistent.json\"", "/nonexistent.json: file not found"),
])
def test_bad_input_is_one_line_error(tiny_coco, tmp_path, override, message):
    ann, images = tiny_coco
    out = tmp_path / "run"
    result = CliRunner().invoke(train_command, ["--config", "/dev/null", *_args(ann, images, out),
                                                "--set", override])
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (out / "model_final.pt").exists()


def test_non_finite_loss_stops_with_last_good_checkpoint(tiny_coco, tmp_path):
    """An LR far too high blows the loss up to NaN at iteration 3: training stops there with a
    one-line error naming the iteration and the iteration-2 checkpoint, which stays as it was
    written and is not followed by a final model."""
    ann, images = tiny_coco
    out = tmp_path / "run"
    result = CliRunner().invoke(train_command, ["--config", "/dev/null",
                                                *_args(ann, images, out, **{"solver.base_lr": 1e4,
                                                                            "solver.max_iter": 8})])
    checkpoint = out / "checkpoints" / "iter_0000002.pt"
    error = result.output.strip().splitlines()[-1]
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert error.startswith("Error: iteration 3: non-finite training loss")
    assert f"Last good checkpoint: {checkpoint}" in error
    assert [p.name for p in (out / "checkpoints").iterdir()] == [checkpoint.name]
    assert not (out / "model_final.pt").exists()
    state = torch.load(checkpoint, weights_only=True)
    assert state["training"]["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2]


def test_check_finite_names_the_terms(tmp_path):
    from sadpipe.engine.run_dir import RunDir
    from sadpipe.engine.trainer import check_finite
    from sadpipe.errors import UserError

    run = RunDir(tmp_path)
    check_finite({"loss_cls": torch.tensor(1.0), "grad_norm": torch.tensor(3.0)}, 7, run)
    with pytest.raises(UserError, match=r"iteration 7: non-finite training loss \(loss_cls=1, "
                                        r"loss_box=inf\).*none \(no checkpoint written yet\)"):
        check_finite({"loss_cls": torch.tensor(1.0), "loss_box": torch.tensor(float("inf"))}, 7, run)
