"""Fused CUDA kernels (numba.cuda, float32) for the sigmoid focal loss and the ADL.

Each kernel walks the flattened ``(M, C)`` elements with a grid-stride loop (int64 indices,
valid for any size), writes ``scale * d loss / d logits`` per element, and reduces the loss
with a shared-memory block reduction plus one atomic add per block. The row / class of an
element are advanced incrementally, so the loop has no integer division.

Launch with a power-of-two block size <= ``MAX_THREADS``. Importing this module imports
numba.cuda; :mod:`cuda_ops.cuda_backend` does so only when the CUDA backend is used.
The per-element formulas match :mod:`cuda_ops.cpu_kernels` (see the docstrings there); here
they use CUDA's float32 ``exp`` / ``log1p`` / ``expm1`` / ``log`` / ``pow``.
"""
import math

import numpy as np
from numba import cuda, float32, float64, int64

from cuda_ops.constants import IGNORE

MAX_THREADS = 256  # size of the shared reduction buffer; launch blocks of at most this many

_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)
_TWO = np.float32(2.0)
_MAX_D = np.float32(87.0)  # exp(-87) is the smallest normal float32 exp needed
_FLT_MIN = np.float32(1.1754943508222875e-38)


@cuda.jit(device=True, fastmath=True)
def _sigmoid_parts(x):
    """``(p, 1 - p, -log p, -log(1 - p))`` of a float32 logit from one exp and one log1p."""
    e = math.exp(-abs(x))
    l1p = math.log1p(e)
    r = _ONE / (_ONE + e)
    if x >= _ZERO:
        return r, e * r, l1p, x + l1p
    return e * r, r, l1p - x, l1p


@cuda.jit(device=True, fastmath=True)
def _pow_unit(base, exponent):
    """``base ** exponent`` for base in [0, 1], exponent >= 0, with 0 ** 0 = 1 (fast-math pow
    is exp2(exponent * log2(base)), which gives NaN for 0 ** 0)."""
    if base > _ZERO:
        return math.pow(base, exponent)
    return _ONE if exponent == _ZERO else _ZERO


@cuda.jit(device=True, fastmath=True)
def _focal_element(x, is_pos, alpha, gamma, gamma_is_two):
    """Loss and gradient of one (logit, binary target) pair (see cpu_kernels._focal_element)."""
    p, one_minus_p, nlog_p, nlog_1mp = _sigmoid_parts(x)
    if is_pos:
        p_t, b, ce, alpha_t, sign = p, one_minus_p, nlog_p, alpha, -_ONE
    else:
        p_t, b, ce, alpha_t, sign = one_minus_p, p, nlog_1mp, _ONE - alpha, _ONE
    b_gamma = b * b if gamma_is_two else _pow_unit(b, gamma)
    weight = alpha_t * b_gamma
    return weight * ce, sign * weight * (gamma * p_t * ce + b)


@cuda.jit(device=True, fastmath=True)
def _xlogx(v):
    return v * math.log(v) if v > _ZERO else _ZERO


@cuda.jit(device=True, fastmath=True)
def _adl_element(x, q, alpha, gamma, beta, gamma_is_two):
    """Loss and gradient of one (logit, teacher probability) pair (see cpu_kernels._adl_element)."""
    p, one_minus_p, nlog_p, nlog_1mp = _sigmoid_parts(x)
    one_minus_q = _ONE - q
    d = q * nlog_p + one_minus_q * nlog_1mp
    if beta != _ZERO:
        d += beta * (_xlogx(q) + _xlogx(one_minus_q))  # - beta * H(q)
    d = min(max(d, _ZERO), _MAX_D)
    w = -math.expm1(-d)
    adw = w * w if gamma_is_two else _pow_unit(w, gamma)
    # dADW/dD = gamma w^(gamma-1) exp(-D); at w = 0 (D = 0) dD/dx = p - q vanishes anyway
    dadw = gamma * (adw / max(w, _FLT_MIN)) * (_ONE - w)
    aq = alpha * q
    bq = (_ONE - alpha) * one_minus_q
    bracket = aq * nlog_p + bq * nlog_1mp
    dbracket = p * (aq + bq) - aq
    return adw * bracket, adw * dbracket + bracket * dadw * (p - q)


@cuda.jit(device=True)
def _block_sum_to(out, value):
    """Sum ``value`` over the block (shared-memory tree) and atomically add it to ``out[0]``."""
    buf = cuda.shared.array(MAX_THREADS, float32)
    tid = cuda.threadIdx.x
    buf[tid] = value
    cuda.syncthreads()
    width = cuda.blockDim.x // 2
    while width > 0:
        if tid < width:
            buf[tid] += buf[tid + width]
        cuda.syncthreads()
        width //= 2
    if tid == 0:
        cuda.atomic.add(out, 0, float64(buf[0]))


@cuda.jit(device=True)
def _stride_start(n_cls):
    """First flat index of this thread and the grid stride, each as (flat, row, col)."""
    start = int64(cuda.grid(1))
    step = int64(cuda.gridsize(1))
    return start, start // n_cls, start % n_cls, step, step // n_cls, step % n_cls


@cuda.jit(fastmath=True, cache=True)
def focal_kernel(logits, labels, alpha, gamma, gamma_is_two, scale, grad, out):
    """logits (M, C) f32, labels (M,) i64, scale (1,) f32 = 1/normaliser;
    grad (M, C) f32 <- scale * dL/dx; out (1,) f64 += loss over non-ignored rows (unscaled)."""
    n_rows, n_cls = logits.shape
    size = int64(n_rows) * n_cls
    flat, row, col, step, row_step, col_step = _stride_start(n_cls)
    s = scale[0]
    acc = _ZERO
    while flat < size:
        label = labels[row]
        if label == IGNORE:
            grad[row, col] = _ZERO
        else:
            loss, dx = _focal_element(logits[row, col], col == label, alpha, gamma, gamma_is_two)
            acc += loss
            grad[row, col] = dx * s
        flat += step
        row += row_step
        col += col_step
        if col >= n_cls:
            col -= n_cls
            row += 1
    _block_sum_to(out, acc)


@cuda.jit(fastmath=True, cache=True)
def adl_kernel(logits, probs, labels, use_labels, alpha, gamma, beta, gamma_is_two, scale, grad, out):
    """logits, probs (M, C) f32, labels (M,) i64 (read only if ``use_labels``), scale (1,) f32;
    grad (M, C) f32 <- scale * dL/dx; out (1,) f64 += loss over rows not ignored (unscaled)."""
    n_rows, n_cls = logits.shape
    size = int64(n_rows) * n_cls
    flat, row, col, step, row_step, col_step = _stride_start(n_cls)
    s = scale[0]
    acc = _ZERO
    while flat < size:
        if use_labels and labels[row] == IGNORE:
            grad[row, col] = _ZERO
        else:
            loss, dx = _adl_element(logits[row, col], probs[row, col], alpha, gamma, beta, gamma_is_two)
            acc += loss
            grad[row, col] = dx * s
        flat += step
        row += row_step
        col += col_step
        if col >= n_cls:
            col -= n_cls
            row += 1
    _block_sum_to(out, acc)


@cuda.jit(fastmath=True, cache=True)
def power_sum_kernel(probs, power, out):
    """probs (M, C) f32; out (1,) f64 += sum of probs ** power."""
    n_rows, n_cls = probs.shape
    size = int64(n_rows) * n_cls
    flat, row, col, step, row_step, col_step = _stride_start(n_cls)
    acc = _ZERO
    while flat < size:
        q = probs[row, col]
        if q > _ZERO:
            acc += math.pow(q, power)
        flat += step
        row += row_step
        col += col_step
        if col >= n_cls:
            col -= n_cls
            row += 1
    _block_sum_to(out, acc)
