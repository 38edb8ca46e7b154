"""numba-cuda backend: launches :mod:`cuda_ops.cuda_kernels` on torch tensors.

On a GPU the tensors are wrapped with ``cuda.as_cuda_array`` (no copy, strides kept) and the
kernels run on torch's current stream of the tensors' device; outputs are allocated with torch,
so nothing here synchronises the host. With ``NUMBA_ENABLE_CUDASIM=1`` (set before numba is
imported) CPU tensors are accepted and the same kernels run in numba's simulator, one Python
thread per CUDA thread, on small launch grids: that is how the GPU code is tested without a GPU.
"""
import math
from contextlib import nullcontext

import numpy as np
import torch
from numba import cuda

from cuda_ops import cuda_kernels

try:  # numba-cuda >= 0.2x keeps its configuration here
    from numba.cuda.core import config as _numba_config
except ImportError:  # pragma: no cover - older numba-cuda
    from numba.core import config as _numba_config

SIMULATOR = bool(_numba_config.ENABLE_CUDASIM)
THREADS = cuda_kernels.MAX_THREADS
BLOCKS_PER_SM = 32  # enough resident warps to saturate memory bandwidth with grid-stride loops
SIMULATOR_THREADS, SIMULATOR_BLOCKS = 32, 2


def accepts(device):
    """Whether tensors on ``device`` can run here (CUDA tensors, or any CPU tensor in the simulator)."""
    return device.type == "cuda" or (SIMULATOR and device.type == "cpu")


def launch_config(size, device, *, threads=None, blocks=None):
    """(blocks, threads) for ``size`` elements: a grid-stride launch of at most a few waves."""
    if threads is None:
        threads = SIMULATOR_THREADS if SIMULATOR else THREADS
    if threads > THREADS or threads & (threads - 1):
        raise ValueError(f"threads: expected a power of two <= {THREADS}, got {threads}")
    if blocks is None:
        if SIMULATOR:
            most = SIMULATOR_BLOCKS
        else:
            most = BLOCKS_PER_SM * cuda.get_current_device().MULTIPROCESSOR_COUNT
        blocks = max(1, min(most, math.ceil(size / threads)))
    return blocks, threads


def _device_context(device):
    return nullcontext() if SIMULATOR else cuda.gpus[device.index or 0]


def _stream(device):
    if SIMULATOR:
        return 0
    return cuda.external_stream(torch.cuda.current_stream(device).cuda_stream)


def _view(tensor):
    """The kernel-side view of a tensor: a numba device array on a GPU; in the simulator a numpy
    array sharing the tensor's memory (the simulator copies it in and writes it back after the
    launch). Outputs are always allocated contiguous, so their writes land in the tensor."""
    tensor = tensor.detach()
    if SIMULATOR:
        return np.ascontiguousarray(tensor.numpy())
    return cuda.as_cuda_array(tensor, sync=False)


def _launch(kernel, size, device, args, launch):
    """Run ``kernel`` over ``size`` elements with ``args`` (tensors are viewed, not copied)."""
    if size == 0:
        return
    blocks, threads = launch_config(size, device, **launch)
    with _device_context(device):
        views = [_view(a) if isinstance(a, torch.Tensor) else a for a in args]
        kernel[blocks, threads, _stream(device)](*views)


def _scale(normalizer):
    return (1.0 / normalizer).reshape(1).to(torch.float32)


def sigmoid_focal_loss(logits, labels, normalizer, *, alpha, gamma, **launch):
    """logits (M, C) float32, labels (M,) int64, normalizer 0-dim -> (loss 0-dim, grad (M, C))."""
    grad = torch.empty(logits.shape, dtype=torch.float32, device=logits.device)
    out = torch.zeros(1, dtype=torch.float64, device=logits.device)
    scale = _scale(normalizer)
    args = (logits, labels, np.float32(alpha), np.float32(gamma), gamma == 2.0, scale, grad, out)
    _launch(cuda_kernels.focal_kernel, logits.numel(), logits.device, args, launch)
    return (out[0] * scale[0]).to(torch.float32), grad


def adaptive_distillation_loss(logits, probs, labels, normalizer, *, alpha, gamma, beta, **launch):
    """logits, probs (M, C) float32, labels (M,) int64 or None -> (loss 0-dim, grad (M, C))."""
    device = logits.device
    grad = torch.empty(logits.shape, dtype=torch.float32, device=device)
    out = torch.zeros(1, dtype=torch.float64, device=device)
    scale = _scale(normalizer)
    use_labels = labels is not None
    if not use_labels:
        labels = torch.zeros(1, dtype=torch.int64, device=device)  # never read
    args = (logits, probs, labels, use_labels, np.float32(alpha), np.float32(gamma),
            np.float32(beta), gamma == 2.0, scale, grad, out)
    _launch(cuda_kernels.adl_kernel, logits.numel(), device, args, launch)
    return (out[0] * scale[0]).to(torch.float32), grad


def power_sum(probs, power, **launch):
    """probs (M, C) float32 -> 0-dim float32 tensor, sum of probs ** power."""
    out = torch.zeros(1, dtype=torch.float64, device=probs.device)
    args = (probs, np.float32(power), out)
    _launch(cuda_kernels.power_sum_kernel, probs.numel(), probs.device, args, launch)
    return out[0].to(torch.float32)
