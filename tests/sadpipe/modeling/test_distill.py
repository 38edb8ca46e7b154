"""ADL assembly against a hand-assembled float64 reference; batch-layout placement."""
import pytest
import torch

from sadpipe.modeling.anchors import AnchorLayout
from sadpipe.modeling.distill import adaptive_distillation_loss, mean_adaptive_weight, to_batch_layout
from sadpipe.modeling.targets import IGNORE

pytestmark = pytest.mark.numerics  # compares against an independent reference (float tolerances)

LAYOUT = AnchorLayout(size_factor=1.0)


def adl_reference(x, q, labels, normalizer, alpha=0.5, gamma=2.0, beta=0.0):
    """the ADL formula (cuda_ops.reference's docstring), float64, written out term by term."""
    x, q = x.double(), q.double()
    p = torch.sigmoid(x)
    ce = -q * torch.log(p) - (1 - q) * torch.log(1 - p)
    h = -torch.xlogy(q, q) - torch.xlogy(1 - q, 1 - q)
    adw = (1 - torch.exp(-(ce - beta * h))) ** gamma
    bracket = alpha * q * (-torch.log(p)) + (1 - alpha) * (1 - q) * (-torch.log(1 - p))
    valid = (labels != IGNORE).unsqueeze(-1)
    return (adw * bracket * valid).sum() / normalizer


def test_batch_adl_matches_float64_reference():
    torch.manual_seed(0)
    n, hwa, c = 2, 30, 4
    x = (torch.randn(n, hwa, c) * 2).requires_grad_()
    q = torch.rand(n, hwa, c) ** 3
    labels = torch.randint(-2, c, (n, hwa))
    normalizer = float((q.double() ** 1.8).sum().clamp(min=1))
    loss = adaptive_distillation_loss(x, q, labels, normalizer)
    loss.backward()
    x64 = x.detach().double().requires_grad_()
    ref = adl_reference(x64, q, labels, normalizer)
    ref.backward()
    torch.testing.assert_close(loss.double(), ref, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-4, atol=1e-7)
    assert 0 < mean_adaptive_weight(x.detach(), q, labels) < 1


def test_to_batch_layout_keeps_each_anchor_on_its_pixels():
    view, batch = (128, 256), (256, 256)
    anchors_view = LAYOUT.anchors(view)
    placed, mask = to_batch_layout(anchors_view, LAYOUT, view, batch, fill=-1.0)
    anchors_batch = LAYOUT.anchors(batch)
    assert mask.sum() == anchors_view.shape[0]
    torch.testing.assert_close(placed[mask], anchors_batch[mask])       # same boxes, same place
    assert (placed[~mask] == -1).all()
