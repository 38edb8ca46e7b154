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
from numba import njit, prange

from cuda_ops.constants import IGNORE
from cuda_ops.fastmath import F32, FLT_MIN, ONE, ZERO, exp_neg, expm1_neg, log1p_unit, log_pos
from cuda_ops.fastmath import INLINE as _INLINE

_KERNEL = dict(fastmath=True, error_model="numpy", cache=True, nogil=True, parallel=True)


@njit(**_INLINE)
def _sigmoid_parts(x):
    """For a float32 logit return ``(p, 1 - p, -log p, -log(1 - p))`` from one exp and one log1p."""
    e = exp_neg(-abs(x))
    l1p = log1p_unit(e)
    r = ONE / (ONE + e)
    pos = x >= ZERO
    p = r if pos else e * r
    one_minus_p = e * r if pos else r
    nlog_p = max(-x, ZERO) + l1p
    nlog_1mp = max(x, ZERO) + l1p
    return p, one_minus_p, nlog_p, nlog_1mp


@njit(**_INLINE)
def _pow_gamma(base, nlog_base, gamma, gamma_is_two):
    """``base ** gamma`` for ``base`` in [0, 1] given ``-log(base)``; one exp unless gamma == 2."""
    if gamma_is_two:
        return base * base
    return exp_neg(-gamma * nlog_base)


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
    alpha_t = alpha if is_pos else ONE - alpha
    weight = alpha_t * _pow_gamma(b, nlog_b, gamma, gamma_is_two)
    grad = weight * (gamma * p_t * ce + b)
    return weight * ce, -grad if is_pos else grad


@njit(**_INLINE)
def _adaptive_weight(w, gamma, gamma_is_two):
    """ADW = w^gamma for w = 1 - exp(-D) in [0, 1); one log and one exp unless gamma == 2."""
    if gamma_is_two:
        return w * w
    return exp_neg(gamma * log_pos(w))


@njit(**_INLINE)
def _adl_element(x, q, alpha, gamma, beta, gamma_is_two, with_entropy):
    """Loss and d loss / dx of one (student logit, teacher probability) pair of the ADL.

    D = CE - beta H(q) (clamped to [0, 87]), w = 1 - exp(-D), ADW = w^gamma,
    K = alpha q (-log p) + (1 - alpha)(1 - q)(-log(1 - p)), loss = ADW K;
    dD/dx = p - q, dADW/dD = gamma w^(gamma-1) exp(-D),
    dK/dx = p (alpha q + (1 - alpha)(1 - q)) - alpha q.
    """
    p, one_minus_p, nlog_p, nlog_1mp = _sigmoid_parts(x)
    one_minus_q = ONE - q
    d = q * nlog_p + one_minus_q * nlog_1mp
    if with_entropy:
        entropy = -(q * log_pos(q) + one_minus_q * log_pos(one_minus_q))
        d = d - beta * entropy
    d = max(d, ZERO)
    w = -expm1_neg(-d)
    adw = _adaptive_weight(w, gamma, gamma_is_two)
    # dADW/dD = gamma w^(gamma - 1) exp(-D) = gamma (ADW / w) exp(-D); ADW / w -> 0 as w -> 0
    dadw = gamma * (adw / max(w, FLT_MIN)) * (ONE - w)
    aq = alpha * q
    bq = (ONE - alpha) * one_minus_q
    bracket = aq * nlog_p + bq * nlog_1mp
    dbracket = p * (aq + bq) - aq
    grad = adw * dbracket + bracket * dadw * (p - q)
    return adw * bracket, grad


# --------------------------------------------------------------------------- rows
# One row = one label; the class loop is contiguous and branch-free, so LLVM vectorises it.
@njit(**_INLINE)
def _focal_row(x_row, grad_row, label, alpha, gamma, gamma_is_two, scale):
    """Write ``scale * d loss / dx`` for one row, return the row's loss sum (float32)."""
    row_sum = ZERO
    for c in range(x_row.shape[0]):
        loss, dx = _focal_element(x_row[c], c == label, alpha, gamma, gamma_is_two)
        row_sum += loss
        grad_row[c] = dx * scale
    return row_sum


@njit(**_INLINE)
def _adl_row(x_row, q_row, grad_row, alpha, gamma, beta, gamma_is_two, with_entropy, scale):
    """Write ``scale * d loss / dx`` for one row, return the row's loss sum (float32)."""
    row_sum = ZERO
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
    row_sum = ZERO
    for c in range(q_row.shape[0]):
        q = q_row[c]
        term = exp_neg(min(power * log_pos(q), ZERO))
        row_sum += term if q > ZERO else ZERO
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
            keep = ZERO if labels[i] == IGNORE else ONE
            row_sum = _focal_row(logits[i], grad[i], labels[i], a, g, True, s * keep)
            total += np.float64(row_sum * keep)
    else:
        for i in prange(logits.shape[0]):
            keep = ZERO if labels[i] == IGNORE else ONE
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
            keep = ZERO if use_labels and labels[i] == IGNORE else ONE
            row_sum = _adl_row(logits[i], probs[i], grad[i], a, g, b, True, False, s * keep)
            total += np.float64(row_sum * keep)
    else:
        for i in prange(logits.shape[0]):
            keep = ZERO if use_labels and labels[i] == IGNORE else ONE
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
