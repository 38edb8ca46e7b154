"""cuda_ops.power_sum (the ADL normaliser) on every backend against float64 sums."""
import pytest
import torch

import cuda_ops
from tests.cuda_ops.conftest import BACKENDS, EXTREME_PROBS, assert_matches


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("power", [1.8, 1.0, 3.0, 0.5])
def test_matches_float64_sum(backend, power, generator):
    q = torch.rand(30, 9, generator=generator) ** 2
    q[0] = torch.tensor(EXTREME_PROBS + (0.25, 0.75))
    result = cuda_ops.power_sum(q, power, backend=backend)
    assert result.dim() == 0
    assert_matches(result, (q.double() ** power).sum())


@pytest.mark.parametrize("backend", ("torch", "numba-cpu"))
def test_larger_input(backend, generator):
    q = torch.rand(500, 80, generator=generator) ** 5
    assert_matches(cuda_ops.power_sum(q, backend=backend), (q.double() ** 1.8).sum())


@pytest.mark.parametrize("backend", BACKENDS)
def test_zeros_and_empty(backend):
    assert cuda_ops.power_sum(torch.zeros(4, 3), backend=backend).item() == 0.0
    assert cuda_ops.power_sum(torch.zeros(0, 3), backend=backend).item() == 0.0
