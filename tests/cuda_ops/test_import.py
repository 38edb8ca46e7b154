"""cuda_ops imports and computes on a machine with neither CUDA nor the simulator, without
loading numba.cuda (a fresh interpreter, since this test session runs with the simulator)."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
import torch
import cuda_ops
x = torch.randn(6, 4, requires_grad=True)
q = torch.rand(6, 4)
labels = torch.tensor([0, -1, -2, 3, 1, -1])
cuda_ops.adaptive_distillation_loss(x, q, labels).backward()
cuda_ops.sigmoid_focal_loss(x, labels).backward()
assert torch.isfinite(x.grad).all()
assert "numba.cuda" not in sys.modules, "numba.cuda was imported"
try:
    cuda_ops.sigmoid_focal_loss(x, labels, backend="numba-cuda")
except ValueError as err:
    print(err)
"""


def test_cpu_only_import_and_use():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("backend: 'numba-cuda'")
