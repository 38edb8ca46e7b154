"""numba-cpu backend: torch CPU tensors in, (loss, gradient) out, via :mod:`cuda_ops.cpu_kernels`.

Inputs are used in place when contiguous (a non-contiguous input is copied once, so each
kernel is compiled for one memory layout only). Outputs are allocated with torch.
"""
import numba
import numpy as np
import torch

# numba's OpenMP threading layer shares the process's libgomp with torch, and its first
# parallel launch resets torch's intra-op thread count (a process started with 1 thread
# silently gets all cores, and its numerics and speed change). The workqueue layer leaves
# torch alone. Chosen before the first parallel launch; NUMBA_THREADING_LAYER still wins.
if numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER = "workqueue"

from cuda_ops import cpu_kernels  # noqa: E402

_NO_LABELS = np.empty(0, dtype=np.int64)


def _array(tensor):
    """A contiguous numpy view of a detached CPU tensor (copies only if non-contiguous)."""
    return tensor.detach().contiguous().numpy()


def _match_torch_threads():
    """Use as many threads as torch does (never more than numba was started with)."""
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def _loss(total, normalizer):
    return torch.tensor(total / float(normalizer), dtype=torch.float32)


def sigmoid_focal_loss(logits, labels, normalizer, *, alpha, gamma):
    """logits (M, C) float32, labels (M,) int64, normalizer 0-dim -> (loss 0-dim, grad (M, C))."""
    _match_torch_threads()
    grad = torch.empty(logits.shape, dtype=torch.float32)
    total = cpu_kernels.focal_forward(
        _array(logits), _array(labels), float(alpha), float(gamma),
        1.0 / float(normalizer), grad.numpy(),
    )
    return _loss(total, normalizer), grad


def adaptive_distillation_loss(logits, probs, labels, normalizer, *, alpha, gamma, beta):
    """logits, probs (M, C) float32, labels (M,) int64 or None -> (loss 0-dim, grad (M, C))."""
    _match_torch_threads()
    grad = torch.empty(logits.shape, dtype=torch.float32)
    total = cpu_kernels.adl_forward(
        _array(logits), _array(probs), _NO_LABELS if labels is None else _array(labels),
        float(alpha), float(gamma), float(beta), 1.0 / float(normalizer), grad.numpy(),
    )
    return _loss(total, normalizer), grad


def power_sum(probs, power):
    """probs (M, C) float32 -> 0-dim float32 tensor, sum of probs ** power."""
    _match_torch_threads()
    return torch.tensor(cpu_kernels.power_sum(_array(probs), float(power)), dtype=torch.float32)
