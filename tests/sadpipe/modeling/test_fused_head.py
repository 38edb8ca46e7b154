"""The head's two towers run as one: the same outputs as torchvision's head (float64), with
and without GroupNorm, on FPN levels of several sizes; the model itself untouched."""
import pytest
import torch
from torch import nn
from torchvision.models.detection.retinanet import RetinaNetHead

from sadpipe.modeling.anchors import AnchorLayout
from sadpipe.modeling.fused_head import FusedRetinaNetHead, fuse_head
from sadpipe.modeling.retinanet import RetinaNet

NUM_ANCHORS, NUM_CLASSES, CHANNELS = 9, 5, 16
LEVEL_SIZES = [(12, 16), (6, 8), (3, 4), (2, 2), (1, 1)]


def _randomize(head: nn.Module, generator: torch.Generator) -> None:
    """Every parameter drawn O(1)/sqrt(fan-in), so both towers and both predictors matter and
    a swapped half or a wrong group shows."""
    with torch.no_grad():
        for name, param in head.named_parameters():
            fan_in = param[0].numel() if param.dim() > 1 else 1
            param.copy_(torch.randn(param.shape, generator=generator) / fan_in ** 0.5)
            if "weight" in name and param.dim() == 1:   # GroupNorm gains stay positive
                param.abs_().add_(0.5)


@pytest.mark.numerics   # compares against an independent reference (float tolerances)
@pytest.mark.parametrize("norm", [None, "gn"])
def test_fused_head_gives_torchvision_heads_outputs(norm):
    generator = torch.Generator().manual_seed(0)
    norm_layer = (lambda c: nn.GroupNorm(4, c)) if norm else None
    head = RetinaNetHead(CHANNELS, NUM_ANCHORS, NUM_CLASSES, norm_layer=norm_layer)
    _randomize(head, generator)
    head = head.double().eval()
    fused = FusedRetinaNetHead(head).eval()
    features = [torch.randn(2, CHANNELS, h, w, generator=generator, dtype=torch.float64)
                for h, w in LEVEL_SIZES]
    with torch.no_grad():
        expected, got = head(features), fused(features)
    positions = sum(h * w for h, w in LEVEL_SIZES) * NUM_ANCHORS
    assert got["cls_logits"].shape == (2, positions, NUM_CLASSES)
    assert got["bbox_regression"].shape == (2, positions, 4)
    for key in ("cls_logits", "bbox_regression"):
        torch.testing.assert_close(got[key], expected[key], rtol=1e-10, atol=1e-10)
    # the fused copy has half the tower convs, the later ones grouped by tower
    convs = [m for m in fused.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4 + 2 and [c.groups for c in convs[:4]] == [1, 2, 2, 2]


def test_fuse_head_on_a_model_keeps_its_outputs_and_leaves_others_alone():
    torch.manual_seed(0)
    model = RetinaNet("toy_student_mid", NUM_CLASSES, AnchorLayout()).eval()
    twin = RetinaNet("toy_student_mid", NUM_CLASSES, AnchorLayout()).eval()
    twin.load_state_dict(model.state_dict())
    fuse_head(twin)
    assert isinstance(twin.head, FusedRetinaNetHead) and isinstance(model.head, RetinaNetHead)
    images = torch.randn(2, 3, 128, 160)
    with torch.no_grad():
        for expected, got in zip(model(images), twin(images)):   # float32 rounding only
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_a_norm_other_than_group_norm_is_refused():
    head = RetinaNetHead(CHANNELS, NUM_ANCHORS, NUM_CLASSES, norm_layer=nn.BatchNorm2d)
    with pytest.raises(TypeError, match="BatchNorm2d"):
        FusedRetinaNetHead(head)
