"""The deployable ImageNet bodies train: `sadpipe train` with model.pretrained = true loads
torchvision's weights (from a hub cache filled by the test, never downloaded) and takes a few
steps at 64 px; the frozen stem keeps its ImageNet weights, the rest of the body moves."""
import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from sadpipe.commands.train import command as train_command
from sadpipe.modeling.backbones import ARCHS, imagenet_weights
from tests.sadpipe.conftest import STUDENT_ARCHS, tiny_train_overrides

STEM = {"resnet": "conv1.weight", "mobilenet": "features.0.0.weight", "regnet_imagenet": "stem.0.weight"}
LAST = {"resnet": "layer4.1.conv2.weight", "mobilenet": "features.16.0.weight",
        "regnet_imagenet": "trunk_output.block4.block4-0.f.c.0.weight"}
BODY = "backbone.body."     # the detector's body: torchvision's trunk without its wrapper names


def _our_name(name: str) -> str:
    """Where torchvision's tensor ``name`` sits in the detector."""
    return BODY + name.replace("features.", "").replace("trunk_output.", "")


@pytest.mark.parametrize("arch", STUDENT_ARCHS)
def test_imagenet_body_trains_a_few_steps(arch, offline_cache, tiny_coco, tmp_path):
    ann, images = tiny_coco
    out = tmp_path / "run"
    args = ["--config", "/dev/null", "--out", str(out)]
    for item in (*tiny_train_overrides(ann, images), f"model.arch={arch}", "model.pretrained=true",
                 "model.anchor_size_factor=4.0", "solver.max_iter=2", "solver.steps=[100]"):
        args += ["--set", item]
    result = CliRunner().invoke(train_command, args)
    assert result.exit_code == 0, result.output

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in records)
    family = ARCHS[arch].family
    weights_file = Path(imagenet_weights(ARCHS[arch].body).url).name
    imagenet = torch.load(offline_cache / weights_file, weights_only=True)
    trained = torch.load(out / "model_final.pt", weights_only=True)["state_dict"]
    stem, last = STEM[family], LAST[family]
    assert torch.equal(trained[_our_name(stem)], imagenet[stem])        # frozen
    assert not torch.equal(trained[_our_name(last)], imagenet[last])    # trained
    moved = (trained[_our_name(last)] - imagenet[last]).norm() / imagenet[last].norm()
    assert moved < 0.5                                                          # from ImageNet


def test_msra_stride_is_refused_for_basic_blocks():
    """stride_in_1x1 moves a bottleneck's stride to its first 1x1 conv; ResNet-18/34 have no
    such conv: a one-line error naming the key, not a model built wrong."""
    from sadpipe.config import load_config
    from sadpipe.engine.trainer import model_spec_from_config
    from sadpipe.errors import UserError

    cfg = load_config(None, ("model.arch=resnet18", "model.stride_in_1x1=true"))
    with pytest.raises(UserError, match="model.stride_in_1x1 exists for bottleneck bodies .* 'resnet18'"):
        model_spec_from_config(cfg, [{"id": 1, "name": "a"}])
    cfg = load_config(None, ("model.arch=resnet18", 'model.p6_from="c5"'))   # this one fits
    model = model_spec_from_config(cfg, [{"id": 1, "name": "a"}]).build()
    assert model.backbone.fpn.extra_blocks.p6.in_channels == 512        # P6 on C5
