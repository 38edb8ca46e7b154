"""RetinaNet head initialisation: the release's N(0, 0.01) for the paper archs, width-scaled
(Kaiming, fan-in) towers for the small archs, whose activations then keep their scale."""
import math

import pytest
import torch
import torch.nn as nn

from sadpipe.modeling.anchors import AnchorLayout
from sadpipe.modeling.backbones import ARCHS
from sadpipe.modeling.retinanet import RetinaNet, init_head_towers

pytestmark = pytest.mark.numerics  # compares against an independent reference (float tolerances)


def _tower_convs(model):
    return [m for branch in (model.head.classification_head, model.head.regression_head)
            for m in branch.conv.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("arch", ["toy_teacher", "toy_student"])
def test_small_arch_towers_are_kaiming_and_keep_the_signal(arch):
    torch.manual_seed(0)
    model = RetinaNet(arch, 10, AnchorLayout(size_factor=1.0))
    convs = _tower_convs(model)
    assert len(convs) == 8
    for conv in convs:
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_in), rel=0.1)
        assert torch.count_nonzero(conv.bias) == 0
    head = model.head.classification_head
    prior_bias = -math.log((1 - 0.01) / 0.01)
    assert torch.allclose(head.cls_logits.bias, torch.full_like(head.cls_logits.bias, prior_bias))
    assert head.cls_logits.weight.std().item() == pytest.approx(0.01, rel=0.1)
    # the class tower keeps the root-mean-square of a unit-scale input within 2x
    x = torch.randn(2, ARCHS[arch].fpn_channels, 16, 16)
    with torch.no_grad():
        y = head.conv(x)
    rms = y.pow(2).mean().sqrt().item()
    assert 0.5 < rms < 2.0


def test_release_init_is_normal_001_and_shrinks_small_towers():
    """The release's init, kept for the paper archs; on a 32-channel tower it loses ~10x per
    conv (why the small archs do not use it)."""
    torch.manual_seed(0)
    model = RetinaNet("toy_student", 10, AnchorLayout(size_factor=1.0))
    for module in model.head.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, std=0.01)
    init_head_towers(model.head, "release")  # leaves them as they are
    for conv in _tower_convs(model):
        assert conv.weight.std().item() == pytest.approx(0.01, rel=0.1)
    x = torch.randn(2, 32, 16, 16)
    with torch.no_grad():
        y = model.head.classification_head.conv(x)
    assert y.pow(2).mean().sqrt().item() < 1e-3
    assert ARCHS["resnet50"].head_init == "release" and ARCHS["resnext101_64x4d"].head_init == "release"


def test_unknown_init_scheme_is_refused():
    model = RetinaNet("toy_student", 2, AnchorLayout(size_factor=1.0))
    with pytest.raises(ValueError, match="head_init"):
        init_head_towers(model.head, "xavier")
