"""`sadpipe pretrain`: deterministic, resumable at epoch boundaries, a body the detectors
load (model.pretrained / model.body_weights), refusals."""
import shlex

import pytest
import torch
from click.testing import CliRunner

from sadpipe import zoo
from sadpipe.commands.pretrain import command as pretrain_command
from sadpipe.config import load_config
from sadpipe.engine import pretrain as pretrain_module
from sadpipe.engine.pretrain import PretrainSettings, pretrain
from sadpipe.modeling.anchors import AnchorLayout
from sadpipe.modeling.retinanet import RetinaNet
from tests.sadpipe.conftest import assert_one_line_error, tiny_train_overrides

TINY = dict(arch="toy_student", num_images=6, num_val_images=2, epochs=3, batch_size=8,
            base_lr=0.05, warmup_steps=2)


def _body(path):
    return torch.load(path, weights_only=True)["state_dict"]


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    first = pretrain(PretrainSettings(**TINY), tmp_path / "a.pt")
    pretrain(PretrainSettings(**TINY), tmp_path / "b.pt")
    pretrain(PretrainSettings(**TINY, seed=1), tmp_path / "c.pt")
    assert _equal(_body(tmp_path / "a.pt"), _body(tmp_path / "b.pt"))
    assert not _equal(_body(tmp_path / "a.pt"), _body(tmp_path / "c.pt"))
    payload = zoo.read_body_file(tmp_path / "a.pt")
    assert payload["arch"] == "toy_student" and payload["norm"] == "bn"
    assert set(payload["state_dict"]) == set(RetinaNet("toy_student", 2).backbone.body.state_dict())
    assert first["generator_version"] and first["num_train_crops"] > 6
    assert first["settings"]["seed"] == 0 and 0.0 <= first["val_accuracy"] <= 1.0


def test_training_lowers_the_loss_on_its_crops(tmp_path):
    """Classification learns: the training loss falls from about ln(11) (chance over 10
    shapes + background) epoch after epoch on a few images."""
    provenance = pretrain(PretrainSettings(**{**TINY, "epochs": 6}), tmp_path / "body.pt")
    losses = [e["train_loss"] for e in provenance["epochs"]]
    assert [e["epoch"] for e in provenance["epochs"]] == [1, 2, 3, 4, 5, 6]
    assert losses[0] > 1.5 and losses[-1] < 0.8 * losses[0]


def test_killed_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    pretrain(PretrainSettings(**TINY), tmp_path / "ref.pt")
    real_epoch = pretrain_module._train_epoch
    calls = []

    def dies_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed mid-epoch 2: epoch 1's state is on disk
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(pretrain_module, "_train_epoch", dies_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        pretrain(PretrainSettings(**TINY), tmp_path / "out.pt")
    assert (tmp_path / "out.pt.partial").exists() and not (tmp_path / "out.pt").exists()
    monkeypatch.setattr(pretrain_module, "_train_epoch", real_epoch)
    pretrain(PretrainSettings(**TINY), tmp_path / "out.pt")
    assert _equal(_body(tmp_path / "ref.pt"), _body(tmp_path / "out.pt"))
    assert not (tmp_path / "out.pt.partial").exists()


def test_detector_loads_the_body_by_pretrained_and_by_body_weights(tmp_path, monkeypatch):
    pretrain(PretrainSettings(**TINY), tmp_path / "toy_student_body.pt")
    body = _body(tmp_path / "toy_student_body.pt")
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path)
    model = RetinaNet("toy_student", 2, AnchorLayout(size_factor=1.0), pretrained=True)
    assert _equal({k: v for k, v in model.backbone.body.state_dict().items()}, body)

    from sadpipe.engine.trainer import _load_body_weights, model_spec_from_config
    cfg = load_config(None, ("model.arch=toy_student",))
    spec = model_spec_from_config(cfg, [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
    fresh = spec.build()
    _load_body_weights(fresh, spec, tmp_path / "toy_student_body.pt")
    assert _equal(fresh.backbone.body.state_dict(), body)


def test_wrong_body_files_are_one_line_errors(tmp_path, tiny_coco):
    from sadpipe.commands.train import command as train_command

    pretrain(PretrainSettings(**TINY), tmp_path / "student_body.pt")
    ann, images = tiny_coco
    runner = CliRunner()
    cases = [(tmp_path / "student_body.pt", "model.arch=toy_teacher", "a pretrained toy_student body"),
             (tmp_path / "missing.pt", "model.arch=toy_student", "no pretrained body file"),
             (ann, "model.arch=toy_student", "not a readable body file")]
    for k, (path, arch, message) in enumerate(cases):
        args = ["--config", "/dev/null", "--out", str(tmp_path / f"run{k}")]
        for item in (*tiny_train_overrides(ann, images), arch, f'model.body_weights="{path}"'):
            args += ["--set", item]
        assert_one_line_error(runner.invoke(train_command, args), str(path), message)


def test_cli_writes_the_body_with_its_provenance(tmp_path, monkeypatch):
    out = tmp_path / "body.pt"
    args = ["--arch", "toy_student", "--out", str(out), "--num-images", "4",
            "--num-val-images", "2", "--epochs", "1", "--batch-size", "8"]
    monkeypatch.setattr("sys.argv", ["sadpipe", "pretrain", *args])   # as the CLI sees it
    result = CliRunner().invoke(pretrain_command, args)
    assert result.exit_code == 0, result.output
    assert "held-out accuracy" in result.output
    provenance = zoo.read_body_file(out)["provenance"]
    assert provenance["settings"]["num_images"] == 4 and provenance["settings"]["epochs"] == 1
    assert provenance["command"] == shlex.join(["sadpipe", "pretrain", *args])


def test_help_explains_the_command():
    result = CliRunner().invoke(pretrain_command, ["--help"])
    assert result.exit_code == 0 and "pretrain split" in result.output.replace("`", "")


def test_pretrain_offers_every_small_body():
    """--arch lists exactly the RegNet bodies of ARCHS (named in the command so --help loads
    no torch)."""
    from sadpipe.commands.pretrain import SMALL_ARCHS
    from sadpipe.modeling.backbones import ARCHS
    assert SMALL_ARCHS == [name for name, spec in ARCHS.items() if spec.family == "regnet"]
