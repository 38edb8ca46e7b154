"""cuda_ops.sigmoid_focal_loss on every backend against an independent float64 reference,
torchvision.ops.sigmoid_focal_loss with one-hot targets, hand-computed values and gradcheck."""
import math

import pytest
import torch
import torchvision

import cuda_ops
from tests.cuda_ops import float64_reference as ref
from tests.cuda_ops.conftest import (
    BACKENDS,
    EXTREME_LOGITS,
    FUSED_BACKENDS,
    assert_matches,
    loss_and_grad,
    random_labels,
)

pytestmark = pytest.mark.numerics  # compares against an independent reference (float tolerances)

FOCAL = cuda_ops.sigmoid_focal_loss
SETTINGS = [(0.25, 2.0), (0.25, 0.0), (0.5, 1.0), (0.1, 2.5), (0.25, 0.5)]
SHAPES = [(40, 7), (8, 37)]


def _inputs(shape, generator):
    x = torch.randn(shape, generator=generator) * 4
    return x, random_labels(shape[0], shape[1], generator)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("alpha,gamma", SETTINGS)
def test_matches_float64_reference(backend, shape, alpha, gamma, generator):
    if backend == "numba-cuda" and shape != SHAPES[0] and gamma != 2.0:
        pytest.skip("simulator time: one shape per setting is enough")
    x, labels = _inputs(shape, generator)
    loss, grad = loss_and_grad(FOCAL, x, labels, alpha=alpha, gamma=gamma, backend=backend)
    expected_loss, expected_grad = ref.focal(x, labels, alpha=alpha, gamma=gamma)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert_matches(loss, expected_loss)
    assert_matches(grad, expected_grad)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.4, 1.5)])
def test_matches_torchvision_with_one_hot_targets(backend, alpha, gamma, generator):
    x, labels = _inputs((30, 6), generator)
    kept = labels != cuda_ops.IGNORE
    targets = torch.nn.functional.one_hot(labels.clamp(min=0), 6).double() * (labels >= 0).double()[:, None]
    x64 = x.double().requires_grad_(True)
    per_element = torchvision.ops.sigmoid_focal_loss(x64, targets, alpha=alpha, gamma=gamma, reduction="none")
    expected = per_element[kept].sum() / max(int((labels >= 0).sum()), 1)
    expected.backward()
    loss, grad = loss_and_grad(FOCAL, x, labels, alpha=alpha, gamma=gamma, backend=backend)
    assert_matches(loss, expected.detach())
    assert_matches(grad, x64.grad)


@pytest.mark.parametrize("backend", ("torch", "numba-cpu"))
def test_matches_reference_on_a_larger_batch(backend, generator):
    x, labels = _inputs((600, 80), generator)
    loss, grad = loss_and_grad(FOCAL, x, labels, backend=backend)
    expected_loss, expected_grad = ref.focal(x, labels)
    assert_matches(loss, expected_loss)
    assert_matches(grad, expected_grad)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("gamma", [2.0, 1.5])
def test_extreme_logits_stay_finite_and_exact(backend, gamma):
    x = torch.tensor(EXTREME_LOGITS).repeat_interleave(4).reshape(-1, 1).repeat(1, 3)
    labels = torch.tensor([-1, 0, 2, -2] * len(EXTREME_LOGITS))
    loss, grad = loss_and_grad(FOCAL, x, labels, gamma=gamma, backend=backend)
    expected_loss, expected_grad = ref.focal(x, labels, gamma=gamma)
    assert_matches(loss, expected_loss)
    assert_matches(grad, expected_grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_computed_values(backend):
    # x = 0, p = 1/2. Positive: alpha (1/2)^2 ln 2, grad alpha (1/2)^2 (gamma/2 ln(1/2) - 1/2).
    # Negative: (1 - alpha)(1/2)^2 ln 2, grad (1 - alpha)(1/2)^2 (1/2 - gamma/2 ln(1/2)).
    x = torch.zeros(1, 2)
    loss, grad = loss_and_grad(FOCAL, x, torch.tensor([0]), alpha=0.25, gamma=2.0, backend=backend)
    ln2 = math.log(2)
    assert loss.item() == pytest.approx(0.25 * 0.25 * ln2 + 0.75 * 0.25 * ln2, rel=1e-6)
    assert grad[0, 0].item() == pytest.approx(0.25 * 0.25 * (-ln2 - 0.5), rel=1e-6)
    assert grad[0, 1].item() == pytest.approx(0.75 * 0.25 * (0.5 + ln2), rel=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_normalizer_forms(backend, generator):
    x, labels = _inputs((20, 6), generator)
    expected_loss, expected_grad = ref.focal(x, labels, normalizer=4.5)
    for normalizer in (4.5, torch.tensor(4.5), torch.tensor(4.5, dtype=torch.float64)):
        loss, grad = loss_and_grad(FOCAL, x, labels, normalizer=normalizer, backend=backend)
        assert_matches(loss, expected_loss)
        assert_matches(grad, expected_grad)
    only_background = torch.full((20,), -1)  # no positive row: the default normaliser is 1
    loss, _ = loss_and_grad(FOCAL, x, only_background, backend=backend)
    assert_matches(loss, ref.focal(x, only_background, normalizer=1.0)[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs(backend, generator):
    x_t = torch.randn(9, 16, generator=generator) * 3
    labels_wide = random_labels(32, 9, generator)
    x, labels = x_t.t(), labels_wide[::2]
    assert not (x.is_contiguous() or labels.is_contiguous())
    loss, grad = loss_and_grad(FOCAL, x, labels, backend=backend)
    expected_loss, expected_grad = ref.focal(x, labels)
    assert_matches(loss, expected_loss)
    assert_matches(grad, expected_grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_and_fully_ignored_batches(backend):
    loss, grad = loss_and_grad(FOCAL, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), backend=backend)
    assert loss.item() == 0.0 and grad.shape == (0, 4)
    loss, grad = loss_and_grad(FOCAL, torch.full((5, 4), -3.0), torch.full((5,), -2), backend=backend)
    assert loss.item() == 0.0
    assert torch.equal(grad, torch.zeros(5, 4))


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_backward_scales_by_incoming_gradient(backend, generator):
    x, labels = _inputs((12, 5), generator)
    _, grad = loss_and_grad(FOCAL, x, labels, backend=backend)
    leaf = x.clone().requires_grad_(True)
    (0.5 * FOCAL(leaf, labels, backend=backend) - leaf.sum()).backward()
    assert_matches(leaf.grad, 0.5 * grad - 1)


def test_auto_backend_runs_the_numba_cpu_kernel_for_cpu_tensors(generator):
    x, labels = _inputs((10, 4), generator)
    loss = FOCAL(x.clone().requires_grad_(True), labels)
    assert type(loss.grad_fn).__name__ == "FusedLossFunctionBackward"
    assert cuda_ops.dispatch.resolve_backend("auto", x.device) == "numba-cpu"


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.6, 1.0), (0.25, 3.5)])
def test_reference_backend_passes_gradcheck(alpha, gamma, generator):
    x = torch.randn(5, 3, generator=generator, dtype=torch.float64).requires_grad_(True)
    labels = torch.tensor([0, -1, -2, 2, 1])

    def loss(logits):
        return FOCAL(logits, labels, alpha=alpha, gamma=gamma, backend="torch")

    assert torch.autograd.gradcheck(loss, (x,))
