"""The numba-cpu kernels must not change torch's thread count (shared OpenMP runtime)."""
import subprocess
import sys

SCRIPT = """
import torch, cuda_ops
torch.set_num_threads(1)
x = torch.zeros(64, 4, requires_grad=True)
cuda_ops.sigmoid_focal_loss(x, torch.zeros(64, dtype=torch.long), backend="numba-cpu").backward()
cuda_ops.adaptive_distillation_loss(x, torch.rand(64, 4), backend="numba-cpu").backward()
print(torch.get_num_threads())
"""


def test_kernels_leave_torch_thread_count_alone():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "1"
