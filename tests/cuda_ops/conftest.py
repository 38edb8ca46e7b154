"""Shared helpers for the cuda_ops tests. numba-cuda runs in numba's simulator
(tests/conftest.py sets NUMBA_ENABLE_CUDASIM=1 before numba is imported): keep its inputs
to a few hundred elements."""
import pytest
import torch

BACKENDS = ("torch", "numba-cpu", "numba-cuda")
FUSED_BACKENDS = ("numba-cpu", "numba-cuda")
RTOL = 1e-4


def assert_matches(actual, expected, *, rtol=RTOL):
    """Loss or gradient against a float64 reference: relative tolerance ``rtol``, with an
    absolute floor of ``rtol`` x 1e-2 of the largest reference magnitude (elements near zero)."""
    expected = expected.double()
    actual = actual.detach().double()
    assert torch.isfinite(actual).all(), "non-finite values"
    floor = rtol * 1e-2 * float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=max(floor, 1e-12))


def loss_and_grad(fn, logits, *args, **kwargs):
    """Run a cuda_ops loss on a fresh leaf copy of ``logits``; return (loss, logits.grad)."""
    x = logits.detach().clone().requires_grad_(True)
    loss = fn(x, *args, **kwargs)
    loss.backward()
    return loss.detach(), x.grad


def random_labels(num_rows, num_classes, generator):
    """Labels covering every kind: classes, background (-1) and ignored (-2)."""
    return torch.randint(-2, num_classes, (num_rows,), generator=generator)


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(1234)


EXTREME_LOGITS = (-100.0, -30.0, -1e-3, 0.0, 1e-3, 30.0, 100.0)
EXTREME_PROBS = (0.0, 1e-38, 1e-30, 1e-8, 0.5, 1.0 - 1e-7, 1.0)


def extreme_grid(num_classes=3):
    """Every (extreme logit, extreme probability) pair, each repeated over ``num_classes``."""
    x = torch.tensor(EXTREME_LOGITS).repeat_interleave(len(EXTREME_PROBS))
    q = torch.tensor(EXTREME_PROBS).repeat(len(EXTREME_LOGITS))
    return x.unsqueeze(1).repeat(1, num_classes), q.unsqueeze(1).repeat(1, num_classes)
