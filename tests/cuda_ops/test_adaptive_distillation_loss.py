"""cuda_ops.adaptive_distillation_loss on every backend against an independent float64
reference (the ADL formula of cuda_ops.reference's docstring, gradients by autograd),
hand-computed values and gradcheck."""
import math

import pytest
import torch

import cuda_ops
from tests.cuda_ops import float64_reference as ref
from tests.cuda_ops.conftest import (
    BACKENDS,
    FUSED_BACKENDS,
    assert_matches,
    extreme_grid,
    loss_and_grad,
    random_labels,
)

pytestmark = pytest.mark.numerics  # compares against an independent reference (float tolerances)

ADL = cuda_ops.adaptive_distillation_loss
SETTINGS = [  # (alpha, gamma, beta)
    (0.5, 2.0, 0.0),  # the release
    (0.5, 2.0, 0.5),
    (0.3, 3.0, 1.0),  # D = KL
    (0.5, 1.0, 0.0),
    (0.7, 0.0, 0.0),  # ADW = 1
    (0.5, 2.5, -0.5),
]
SHAPES = [(40, 7), (8, 37)]  # C below and above a SIMD width, with remainders


def _inputs(shape, generator):
    x = torch.randn(shape, generator=generator) * 4
    q = torch.rand(shape, generator=generator) ** 3
    q.view(-1)[::11] = 0.0
    q.view(-1)[5::13] = 1.0
    return x, q, random_labels(shape[0], shape[1], generator)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("alpha,gamma,beta", SETTINGS)
def test_matches_float64_reference(backend, shape, alpha, gamma, beta, generator):
    if backend == "numba-cuda" and shape != SHAPES[0] and (gamma, beta) != (2.0, 0.0):
        pytest.skip("simulator time: one shape per setting is enough")
    x, q, labels = _inputs(shape, generator)
    loss, grad = loss_and_grad(ADL, x, q, labels, alpha=alpha, gamma=gamma, beta=beta, backend=backend)
    expected_loss, expected_grad = ref.adl(x, q, labels, alpha=alpha, gamma=gamma, beta=beta)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert_matches(loss, expected_loss)
    assert_matches(grad, expected_grad)


@pytest.mark.parametrize("backend", ("torch", "numba-cpu"))
def test_matches_reference_on_a_larger_batch(backend, generator):
    x = torch.randn(600, 80, generator=generator) * 3
    q = torch.rand(600, 80, generator=generator) ** 4
    labels = random_labels(600, 80, generator)
    loss, grad = loss_and_grad(ADL, x, q, labels, backend=backend)
    expected_loss, expected_grad = ref.adl(x, q, labels)
    assert_matches(loss, expected_loss)
    assert_matches(grad, expected_grad)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("gamma,beta", [(2.0, 0.0), (2.5, 1.0)])
def test_extreme_inputs_stay_finite_and_exact(backend, gamma, beta):
    x, q = extreme_grid()
    labels = torch.tensor([-1, 0, 2, -2, 1, -1, 0] * 7)
    loss, grad = loss_and_grad(ADL, x, q, labels, gamma=gamma, beta=beta, backend=backend)
    expected_loss, expected_grad = ref.adl(x, q, labels, gamma=gamma, beta=beta)
    assert_matches(loss, expected_loss)
    assert_matches(grad, expected_grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_computed_values(backend):
    # x = 0 so p = 1/2. q = 1/2: CE = ln 2, w = 1/2, ADW = 1/4, bracket = ln2 / 2, dL/dx = 0.
    # q = 0: CE = ln 2 again, bracket = (1 - alpha) ln 2 = ln2 / 2; dD/dx = p - q = 1/2,
    # dADW/dD = 2 w exp(-D) = 1/2, d bracket/dx = 1/4 -> dL/dx = 1/4 * 1/4 + ln2/2 * 1/2 * 1/2.
    x = torch.zeros(1, 2)
    q = torch.tensor([[0.5, 0.0]])
    loss, grad = loss_and_grad(ADL, x, q, normalizer=1.0, backend=backend)
    assert loss.item() == pytest.approx(2 * math.log(2) / 8, rel=1e-6)
    assert grad[0, 0].item() == pytest.approx(0.0, abs=1e-7)
    assert grad[0, 1].item() == pytest.approx(1 / 16 + math.log(2) / 8, rel=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_beta_one_weights_by_kl_divergence(backend, generator):
    # With beta = 1, D = CE - H(q) = KL(q || p), computed here directly from its definition.
    x = torch.randn(30, 5, generator=generator, dtype=torch.float64)
    q = torch.rand(30, 5, generator=generator, dtype=torch.float64) * 0.98 + 0.01
    xr = x.clone().requires_grad_(True)
    p = torch.sigmoid(xr)
    kl = q * torch.log(q / p) + (1 - q) * torch.log((1 - q) / (1 - p))
    bracket = -(0.5 * q * torch.log(p) + 0.5 * (1 - q) * torch.log(1 - p))
    expected = ((1 - torch.exp(-kl)) ** 2 * bracket).sum() / 7.0
    expected.backward()
    loss, grad = loss_and_grad(ADL, x.float(), q.float(), beta=1.0, normalizer=7.0, backend=backend)
    assert_matches(loss, expected.detach())
    assert_matches(grad, xr.grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_labels_optional_and_normalizer_forms(backend, generator):
    x, q, labels = _inputs((20, 6), generator)
    # default normaliser: max(sum q^1.8, 1) over ALL rows, the ignored ones included
    expected_loss, expected_grad = ref.adl(x, q, labels)
    for normalizer in (None, float((q.double() ** 1.8).sum()), (q.double() ** 1.8).sum().float()):
        loss, grad = loss_and_grad(ADL, x, q, labels, normalizer=normalizer, backend=backend)
        assert_matches(loss, expected_loss)
        assert_matches(grad, expected_grad)
    loss, grad = loss_and_grad(ADL, x, q, None, normalizer=3, backend=backend)
    expected_loss, expected_grad = ref.adl(x, q, None, normalizer=3.0)
    assert_matches(loss, expected_loss)
    assert_matches(grad, expected_grad)
    tiny = q * 1e-3  # sum q^1.8 < 1: the normaliser is 1
    assert_matches(ADL(x, tiny, labels, backend=backend), ref.adl(x, tiny, labels, normalizer=1.0)[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs(backend, generator):
    x_wide = torch.randn(18, 12, generator=generator) * 3
    q_t = torch.rand(6, 18, generator=generator)
    labels_wide = random_labels(36, 6, generator)
    x, q, labels = x_wide[:, ::2], q_t.t(), labels_wide[::2]
    assert not (x.is_contiguous() or q.is_contiguous() or labels.is_contiguous())
    loss, grad = loss_and_grad(ADL, x, q, labels, backend=backend)
    expected_loss, expected_grad = ref.adl(x, q, labels)
    assert_matches(loss, expected_loss)
    assert_matches(grad, expected_grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_and_fully_ignored_batches(backend):
    empty = torch.zeros(0, 4)
    loss, grad = loss_and_grad(ADL, empty, empty, torch.zeros(0, dtype=torch.int64), backend=backend)
    assert loss.item() == 0.0 and grad.shape == (0, 4)
    x = torch.full((5, 4), 3.0)
    loss, grad = loss_and_grad(ADL, x, torch.full((5, 4), 0.25), torch.full((5,), -2), backend=backend)
    assert loss.item() == 0.0
    assert torch.equal(grad, torch.zeros(5, 4))


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_backward_scales_by_incoming_gradient(backend, generator):
    x, q, labels = _inputs((12, 5), generator)
    _, grad = loss_and_grad(ADL, x, q, labels, backend=backend)
    leaf = x.clone().requires_grad_(True)
    other = (leaf**2).sum()
    (other + 3.0 * ADL(leaf, q, labels, backend=backend)).backward()
    assert_matches(leaf.grad, 2 * x + 3 * grad)


def test_numba_cpu_is_deterministic(generator):
    x, q, labels = _inputs((300, 80), generator)
    first = loss_and_grad(ADL, x, q, labels, backend="numba-cpu")
    second = loss_and_grad(ADL, x, q, labels, backend="numba-cpu")
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_second_backward_through_same_graph_raises(backend, generator):
    x, q, labels = _inputs((6, 3), generator)
    leaf = x.clone().requires_grad_(True)
    loss = ADL(leaf, q, labels, backend=backend)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward ran twice"):
        loss.backward()


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_flows_to_logits_only(backend, generator):
    x, q, labels = _inputs((6, 3), generator)
    leaf_x = x.clone().requires_grad_(True)
    leaf_q = q.clone().requires_grad_(True)
    ADL(leaf_x, leaf_q, labels, backend=backend).backward()
    assert leaf_x.grad is not None and leaf_q.grad is None


@pytest.mark.parametrize("alpha,gamma,beta", [(0.5, 2.0, 0.0), (0.3, 3.0, 0.7), (0.5, 1.0, -0.5)])
def test_reference_backend_passes_gradcheck(alpha, gamma, beta, generator):
    x = torch.randn(5, 3, generator=generator, dtype=torch.float64).requires_grad_(True)
    q = torch.rand(5, 3, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, -1, -2, 2, 1])

    def loss(logits):
        return ADL(logits, q, labels, alpha=alpha, gamma=gamma, beta=beta, backend="torch")

    assert torch.autograd.gradcheck(loss, (x,))
