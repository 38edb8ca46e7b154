"""The numba.cuda kernels in numba's simulator, on launch grids much smaller than the input so
every thread walks the grid-stride loop several times and wraps across rows."""
import pytest
import torch

from cuda_ops import cuda_backend
from tests.cuda_ops import float64_reference as ref
from tests.cuda_ops.conftest import assert_matches, random_labels

pytestmark = pytest.mark.skipif(not cuda_backend.SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1")
GRIDS = [(1, 32), (2, 64), (3, 32)]  # (blocks, threads)


@pytest.mark.parametrize("blocks,threads", GRIDS)
def test_adl_kernel_on_small_grids(blocks, threads, generator):
    x = torch.randn(23, 13, generator=generator) * 3  # 299 elements, C not dividing the stride
    q = torch.rand(23, 13, generator=generator)
    labels = random_labels(23, 13, generator)
    loss, grad = cuda_backend.adaptive_distillation_loss(
        x, q, labels, torch.tensor(2.0), alpha=0.5, gamma=2.0, beta=0.0, blocks=blocks, threads=threads
    )
    expected_loss, expected_grad = ref.adl(x, q, labels, normalizer=2.0)
    assert_matches(loss, expected_loss)
    assert_matches(grad, expected_grad)


@pytest.mark.parametrize("blocks,threads", GRIDS)
def test_focal_kernel_on_small_grids(blocks, threads, generator):
    x = torch.randn(23, 13, generator=generator) * 3
    labels = random_labels(23, 13, generator)
    loss, grad = cuda_backend.sigmoid_focal_loss(
        x, labels, torch.tensor(3.0), alpha=0.25, gamma=2.0, blocks=blocks, threads=threads
    )
    expected_loss, expected_grad = ref.focal(x, labels, normalizer=3.0)
    assert_matches(loss, expected_loss)
    assert_matches(grad, expected_grad)


def test_power_sum_kernel_on_a_single_block(generator):
    q = torch.rand(40, 9, generator=generator)
    assert_matches(cuda_backend.power_sum(q, 1.8, blocks=1, threads=32), (q.double() ** 1.8).sum())


def test_launch_config_covers_the_input_with_a_bounded_grid():
    assert cuda_backend.launch_config(10, torch.device("cpu"), threads=32) == (1, 32)
    blocks, threads = cuda_backend.launch_config(10**9, torch.device("cpu"))
    assert blocks * threads < 10**9  # grid-stride: the grid does not grow with the input
    with pytest.raises(ValueError, match="threads"):
        cuda_backend.launch_config(10, torch.device("cpu"), threads=48)
