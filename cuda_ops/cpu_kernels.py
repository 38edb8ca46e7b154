"""Fused CPU kernels (numba ``njit``, float32) for the sigmoid focal loss and the ADL.

Each forward kernel walks the ``(M, C)`` inputs once, writes the per-element gradient
(already multiplied by ``scale`` = 1 / normaliser) into a caller-allocated buffer and
returns the un-normalised loss sum. No other buffer of input size is created.

Speed comes from keeping the inner loop over classes free of library calls so LLVM can
vectorise it: exp and log1p are evaluated with float32 range reduction + short
polynomials (within 5 ulp), and one exp and one log1p per element serve the
sigmoid, log p, log(1 - p) and the focal term. The ADW costs one more expm1; a general
``gamma`` or ``beta != 0`` cost the logs / exps they need, nothing more.

Identities used throughout (x the logit, p = sigmoid(x), e = exp(-|x|), l = log1p(e)):

    -log p       = softplus(-x) = max(-x, 0) + l        ("A")
    -log(1 - p)  = softplus(x)  = max(x, 0) + l         ("B")
    p = 1/(1+e) if x >= 0 else e/(1+e),   1 - p the other one.
"""
import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic

from cuda_ops.constants import IGNORE

F32 = np.float32
_ZERO = F32(0.0)
_ONE = F32(1.0)
_TWO = F32(2.0)
_HALF = F32(0.5)
_LOG2E = F32(1.4426950408889634)
_LN2_HI = F32(0.693145751953125)  # ln 2 split so that n * _LN2_HI is exact (Cody-Waite)
_LN2_LO = F32(1.428606765330187e-06)
_LN2 = F32(0.6931471805599453)
_SQRT2 = F32(1.4142135623730951)
_EXP_MIN_ARG = F32(-87.0)  # exp(-87) ~ 1.6e-38, still a normal float32
_FLT_MIN = F32(1.1754943508222875e-38)


# Helpers are inlined into the kernels at numba-IR level (LLVM alone declines to inline a
# helper used several times, and an out-of-line call stops the class loop from vectorising).
# Only the kernels are cached: a helper loaded from the cache is object code, not inlinable.
_INLINE = dict(fastmath=True, error_model="numpy", inline="always")
_KERNEL = dict(fastmath=True, error_model="numpy", cache=True, nogil=True, parallel=True)


# --------------------------------------------------------------------------- bit tricks
@intrinsic
def _rint(typingctx, x):
    """Round a float32 to the nearest integer value (still float32)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.rint", [ir.FloatType()])
        return builder.call(fn, args)

    return types.float32(types.float32), codegen


@intrinsic
def _pow2(typingctx, n):
    """``2 ** n`` for a float32 holding an integer in [-126, 127], built from its bits."""
    if n != types.float32:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        bits = builder.fptosi(args[0], i32)
        bits = builder.add(bits, ir.Constant(i32, 127))
        bits = builder.shl(bits, ir.Constant(i32, 23))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(types.float32), codegen


@intrinsic
def _exponent(typingctx, x):
    """Unbiased binary exponent of a positive normal float32, as float32."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        bits = builder.bitcast(args[0], i32)
        biased = builder.lshr(bits, ir.Constant(i32, 23))
        return builder.sitofp(builder.sub(biased, ir.Constant(i32, 127)), ir.FloatType())

    return types.float32(types.float32), codegen


@intrinsic
def _mantissa(typingctx, x):
    """Mantissa in [1, 2) of a positive normal float32."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        bits = builder.bitcast(args[0], i32)
        bits = builder.and_(bits, ir.Constant(i32, 0x007FFFFF))
        bits = builder.or_(bits, ir.Constant(i32, 0x3F800000))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(types.float32), codegen


# --------------------------------------------------------------------------- float32 maths
@njit(**_INLINE)
def _expm1_split(y):
    """Return ``(s, m)`` with ``exp(y) = s * m + s`` and ``expm1(y) = s * m + (s - 1)``.

    ``y`` float32, clamped to [-87, 0]; ``s = 2**n`` and ``m = expm1(r)`` for the reduced
    argument ``r = y - n ln 2`` in [-ln2/2, ln2/2] (degree-7 Taylor, error < 2e-8 relative).
    """
    y = min(max(y, _EXP_MIN_ARG), _ZERO)
    n = _rint(y * _LOG2E)
    r = (y - n * _LN2_HI) - n * _LN2_LO
    poly = F32(1.0 / 5040.0)
    poly = poly * r + F32(1.0 / 720.0)
    poly = poly * r + F32(1.0 / 120.0)
    poly = poly * r + F32(1.0 / 24.0)
    poly = poly * r + F32(1.0 / 6.0)
    poly = poly * r + _HALF
    m = r + r * r * poly
    return _pow2(n), m


@njit(**_INLINE)
def _exp_neg(y):
    """``exp(y)`` for float32 ``y <= 0``; exactly 0 below -87 (no denormals)."""
    s, m = _expm1_split(y)
    return s * m + s if y >= _EXP_MIN_ARG else _ZERO


@njit(**_INLINE)
def _expm1_neg(y):
    """``expm1(y)`` for float32 ``y <= 0`` (accurate for tiny ``|y|``); -1 below -87."""
    s, m = _expm1_split(y)
    return s * m + (s - _ONE)


@njit(**_INLINE)
def _log1p_unit(e):
    """``log1p(e)`` for float32 ``e`` in [0, 1] via ``2 atanh(e / (2 + e))``."""
    s = e / (_TWO + e)  # in [0, 1/3]
    s2 = s * s
    poly = F32(1.0 / 13.0)
    poly = poly * s2 + F32(1.0 / 11.0)
    poly = poly * s2 + F32(1.0 / 9.0)
    poly = poly * s2 + F32(1.0 / 7.0)
    poly = poly * s2 + F32(1.0 / 5.0)
    poly = poly * s2 + F32(1.0 / 3.0)
    return _TWO * s + _TWO * s * s2 * poly


@njit(**_INLINE)
def _log_pos(v):
    """``log(v)`` for float32 ``v``; arguments below the smallest normal are raised to it."""
    v = max(v, _FLT_MIN)
    m = _mantissa(v)
    k = _exponent(v)
    big = m > _SQRT2
    m = m * _HALF if big else m  # now in (0.707, 1.414]
    k = k + _ONE if big else k
    s = (m - _ONE) / (m + _ONE)  # |s| <= 0.172
    s2 = s * s
    poly = F32(1.0 / 11.0)
    poly = poly * s2 + F32(1.0 / 9.0)
    poly = poly * s2 + F32(1.0 / 7.0)
    poly = poly * s2 + F32(1.0 / 5.0)
    poly = poly * s2 + F32(1.0 / 3.0)
    return k * _LN2 + (_TWO * s + _TWO * s * s2 * poly)


@njit(**_INLINE)
def _sigmoid_parts(x):
    """For a float32 logit return ``(p, 1 - p, -log p, -log(1 - p))`` from one exp and one log1p."""
    e = _exp_neg(-abs(x))
    l1p = _log1p_unit(e)
    r = _ONE / (_ONE + e)
    pos = x >= _ZERO
    p = r if pos else e * r
    one_minus_p = e * r if pos else r
    nlog_p = max(-x, _ZERO) + l1p
    nlog_1mp = max(x, _ZERO) + l1p
    return p, one_minus_p, nlog_p, nlog_1mp


@njit(**_INLINE)
def _pow_gamma(base, nlog_base, gamma, gamma_is_two):
    """``base ** gamma`` for ``base`` in [0, 1] given ``-log(base)``; one exp unless gamma == 2."""
    if gamma_is_two:
        return base * base
    return _exp_neg(-gamma * nlog_base)


# --------------------------------------------------------------------------- elementwise
# ``gamma_is_two`` and ``with_entropy`` are always passed as literals, so each kernel loop is
# compiled branch-free for its case (an argument-dependent branch here stops LLVM from
# vectorising the class loop).
@njit(**_INLINE)
def _focal_element(x, is_pos, alpha, gamma, gamma_is_two):
    """Loss and d loss / dx of one (logit, binary target) pair of the sigmoid focal loss.

    With p_t the probability of the target and b = 1 - p_t:
    loss = alpha_t b^gamma (-log p_t);
    grad = -sign_t alpha_t b^gamma (gamma p_t (-log p_t) + b), sign_t = +1 for a positive.
    """
    p, one_minus_p, nlog_p, nlog_1mp = _sigmoid_parts(x)
    p_t = p if is_pos else one_minus_p
    b = one_minus_p if is_pos else p
    ce = nlog_p if is_pos else nlog_1mp
    nlog_b = nlog_1mp if is_pos else nlog_p
    alpha_t = alpha if is_pos else _ONE - alpha
    weight = alpha_t * _pow_gamma(b, nlog_b, gamma, gamma_is_two)
    grad = weight * (gamma * p_t * ce + b)
    return weight * ce, -grad if is_pos else grad


@njit(**_INLINE)
def _adaptive_weight(w, gamma, gamma_is_two):
    """ADW = w^gamma for w = 1 - exp(-D) in [0, 1); one log and one exp unless gamma == 2."""
    if gamma_is_two:
        return w * w
    return _exp_neg(gamma * _log_pos(w))


@njit(**_INLINE)
def _adl_element(x, q, alpha, gamma, beta, gamma_is_two, with_entropy):
    """Loss and d loss / dx of one (student logit, teacher probability) pair of the ADL.

    D = CE - beta H(q) (clamped to [0, 87]), w = 1 - exp(-D), ADW = w^gamma,
    K = alpha q (-log p) + (1 - alpha)(1 - q)(-log(1 - p)), loss = ADW K;
    dD/dx = p - q, dADW/dD = gamma w^(gamma-1) exp(-D),
    dK/dx = p (alpha q + (1 - alpha)(1 - q)) - alpha q.
    """
    p, one_minus_p, nlog_p, nlog_1mp = _sigmoid_parts(x)
    one_minus_q = _ONE - q
    d = q * nlog_p + one_minus_q * nlog_1mp
    if with_entropy:
        entropy = -(q * _log_pos(q) + one_minus_q * _log_pos(one_minus_q))
        d = d - beta * entropy
    d = max(d, _ZERO)
    w = -_expm1_neg(-d)
    adw = _adaptive_weight(w, gamma, gamma_is_two)
    # dADW/dD = gamma w^(gamma - 1) exp(-D) = gamma (ADW / w) exp(-D); ADW / w -> 0 as w -> 0
    dadw = gamma * (adw / max(w, _FLT_MIN)) * (_ONE - w)
    aq = alpha * q
    bq = (_ONE - alpha) * one_minus_q
    bracket = aq * nlog_p + bq * nlog_1mp
    dbracket = p * (aq + bq) - aq
    grad = adw * dbracket + bracket * dadw * (p - q)
    return adw * bracket, grad


# --------------------------------------------------------------------------- rows
# One row = one label; the class loop is contiguous and branch-free, so LLVM vectorises it.
@njit(**_INLINE)
def _focal_row(x_row, grad_row, label, alpha, gamma, gamma_is_two, scale):
    """Write ``scale * d loss / dx`` for one row, return the row's loss sum (float32)."""
    row_sum = _ZERO
    for c in range(x_row.shape[0]):
        loss, dx = _focal_element(x_row[c], c == label, alpha, gamma, gamma_is_two)
        row_sum += loss
        grad_row[c] = dx * scale
    return row_sum


@njit(**_INLINE)
def _adl_row(x_row, q_row, grad_row, alpha, gamma, beta, gamma_is_two, with_entropy, scale):
    """Write ``scale * d loss / dx`` for one row, return the row's loss sum (float32)."""
    row_sum = _ZERO
    for c in range(x_row.shape[0]):
        loss, dx = _adl_element(
            x_row[c], q_row[c], alpha, gamma, beta, gamma_is_two, with_entropy
        )
        row_sum += loss
        grad_row[c] = dx * scale
    return row_sum


@njit(**_INLINE)
def _power_row(q_row, power):
    """Sum of ``q ** power`` over one row (float32)."""
    row_sum = _ZERO
    for c in range(q_row.shape[0]):
        q = q_row[c]
        term = _exp_neg(min(power * _log_pos(q), _ZERO))
        row_sum += term if q > _ZERO else _ZERO
    return row_sum


# --------------------------------------------------------------------------- kernels
# Ignored rows are handled without a branch around the class loop: their gradient scale and
# loss weight are 0 (the loop stays vectorised; ignored rows are a small minority).
@njit(**_KERNEL)
def focal_forward(logits, labels, alpha, gamma, scale, grad):
    """Fused sigmoid focal loss.

    logits: (M, C) float32; labels: (M,) int64 (class, -1 background, -2 ignored);
    grad: (M, C) float32 output, written with ``scale * d loss / d logits``.
    Returns the loss summed over non-ignored rows (float, not scaled).
    """
    a, g, s = F32(alpha), F32(gamma), F32(scale)
    total = 0.0
    if gamma == 2.0:
        for i in prange(logits.shape[0]):
            keep = _ZERO if labels[i] == IGNORE else _ONE
            row_sum = _focal_row(logits[i], grad[i], labels[i], a, g, True, s * keep)
            total += np.float64(row_sum * keep)
    else:
        for i in prange(logits.shape[0]):
            keep = _ZERO if labels[i] == IGNORE else _ONE
            row_sum = _focal_row(logits[i], grad[i], labels[i], a, g, False, s * keep)
            total += np.float64(row_sum * keep)
    return total


@njit(**_KERNEL)
def adl_forward(logits, probs, labels, alpha, gamma, beta, scale, grad):
    """Fused adaptive distillation loss.

    logits, probs: (M, C) float32; labels: (M,) int64, or empty when no row is ignored;
    grad: (M, C) float32 output, written with ``scale * d loss / d logits``.
    gamma must be 0 or >= 1. Returns the loss summed over rows not labelled -2 (not scaled).
    """
    a, g, b, s = F32(alpha), F32(gamma), F32(beta), F32(scale)
    use_labels = labels.shape[0] > 0
    total = 0.0
    if gamma == 2.0 and beta == 0.0:  # the release's setting
        for i in prange(logits.shape[0]):
            keep = _ZERO if use_labels and labels[i] == IGNORE else _ONE
            row_sum = _adl_row(logits[i], probs[i], grad[i], a, g, b, True, False, s * keep)
            total += np.float64(row_sum * keep)
    else:
        for i in prange(logits.shape[0]):
            keep = _ZERO if use_labels and labels[i] == IGNORE else _ONE
            row_sum = _adl_row(logits[i], probs[i], grad[i], a, g, b, False, True, s * keep)
            total += np.float64(row_sum * keep)
    return total


@njit(**_KERNEL)
def power_sum(probs, power):
    """Sum of ``probs ** power`` over all elements. probs: (M, C) float32 in [0, 1]."""
    t = F32(power)
    total = 0.0
    for i in prange(probs.shape[0]):
        total += np.float64(_power_row(probs[i], t))
    return total
