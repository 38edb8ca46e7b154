"""Folding the body's batch norms into its convolutions: same outputs (float64), no batch
norm left in the copy, the model itself untouched."""
import pytest
import torch
from torch import nn
from torchvision.ops import misc as misc_ops

from sadpipe.modeling.anchors import AnchorLayout
from sadpipe.modeling.fold import fold_batch_norms
from sadpipe.modeling.retinanet import RetinaNet

NORMS = (nn.BatchNorm2d, misc_ops.FrozenBatchNorm2d)
# Every body family and every batch norm kind: toy RegNet (bn), ResNet basic / bottleneck
# blocks (frozen bn, Detectron's affine), MobileNetV3 and torchvision's RegNet (frozen bn).
CASES = [("toy_student_mid", "bn"), ("toy_teacher", "bn"), ("resnet18", "frozen_bn"),
         ("resnet50", "affine"), ("mobilenet_v3_large", "frozen_bn"),
         ("regnet_x_800mf", "frozen_bn")]


def _randomize_norms(model: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial statistics and affine parameters, so a wrong fold shows (gains <= 1, so
    activations stay O(1) through the deep bodies)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, NORMS):
                c = module.weight.numel()
                module.weight.copy_(0.5 * torch.rand(c, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(c, generator=generator))
                module.running_mean.copy_(torch.randn(c, generator=generator))
                module.running_var.copy_(torch.rand(c, generator=generator) + 1.0)


@pytest.mark.numerics   # compares against an independent reference (float tolerances)
@pytest.mark.parametrize("arch, norm", CASES)
def test_folded_model_gives_the_same_outputs(arch, norm):
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = RetinaNet(arch, 3, AnchorLayout(), norm=norm)
    _randomize_norms(model, generator)
    model = model.double().eval()
    folded = fold_batch_norms(model)
    images = torch.randn(2, 3, 96, 128, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        expected, got = model(images), folded(images)
    for e, g in zip(expected, got):   # float64 rounding through ~50 layers; a wrong fold is O(1)
        torch.testing.assert_close(g, e, rtol=1e-7, atol=1e-7 * e.abs().max().item())
    assert not any(isinstance(m, NORMS) for m in folded.modules())
    assert sum(isinstance(m, NORMS) for m in model.backbone.body.modules()) > 0


def test_the_model_itself_is_untouched_and_keeps_training():
    model = RetinaNet("toy_student", 3, AnchorLayout()).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batch_norms(model)
    assert model.training and not folded.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
