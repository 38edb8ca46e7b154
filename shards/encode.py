"""The sparse codec's encoder in one pass over a view's dense scores (numba, one core).

What it computes is defined in :mod:`shards.background` (the stand-ins and their fit) and
:mod:`shards.codec` (kept entries). Per pyramid level, one walk over the (n, C) scores gives,
for every block of ``block`` anchors and every class, the sums over the dropped entries
(q < threshold) that the fit needs — count, Σb, Σa³, Σa²b, Σab², Σb³ — the level's per-class
moments Σq, Σq², Σq³, Σd³, the rows that hold a kept entry, and the ADL normaliser's Σ q^θ
over all entries. ``a = -log(1-q)`` is a 5-term series (q ≤ 0.05: relative error
< q^5/6 ≤ 6e-8), ``log q`` and ``q^θ``
come from the vectorisable float32 maths of :mod:`cuda_ops.fastmath`, so the class loop
vectorises. Then, on arrays of block or code size: the block offsets, the per-code sums and
the calibration (bisection on the contrast, Newton on the scale, vectorised over classes).

The sums are float32 within a block and float64 across blocks, like the numpy reference
(``tests/shards/reference_encoder.py``); the normaliser's terms are float32-accurate
(relative error ~1e-7) and summed in float64.
"""
import math

import numpy as np
from numba import njit

from cuda_ops.fastmath import F32, ONE, ZERO, exp_neg, log_pos
from shards.background import (
    CONTRAST_MAX,
    CONTRAST_STEPS,
    MIN_SCORE,
    OFFSET_CODES,
    OFFSET_STEP,
    SCALE_STEPS,
    prior_cross_entropy,
)

_KERNEL = dict(fastmath=True, error_model="numpy", cache=True, nogil=True)
_MIN_SCORE = F32(MIN_SCORE)
_MATCHED = 4  # Σa³, Σa²b, Σab², Σb³ per (block, class)
_MOMENTS = 4  # Σq, Σq², Σq³, Σd³ per class


def encode_view(probs, level_sizes, *, threshold, block, value_low, value_step, value_max_code,
                normalizer_power):
    """All of a view's codec output in one pass.

    Args:
        probs: (HWA, C) float32, C-contiguous, in [0, 1]; level_sizes: (L,) int64, sum HWA.
        threshold, block: the codec's; value_low, value_step, value_max_code: the grid of
            kept logits (code = rint((logit - low) / step) clipped to [0, max_code]).
        normalizer_power: θ of N = Σ q^θ.

    Returns:
        fill (3, L, C) float64 [mean, scale, contrast], block_codes (Σ blocks,) int8,
        positions (K,) int64 (flat anchor * C + class, ascending), values (K,) int64 codes,
        normalizer (float, Σ q^θ over every entry, not clamped).
    """
    num_classes = probs.shape[1]
    fills, codes, kept_rows = [], [], []
    normalizer = 0.0
    start = 0
    a0, b0 = prior_cross_entropy()
    for size in level_sizes.tolist():
        nblocks = -(-size // block)
        count = np.empty((nblocks, num_classes), np.float32)
        block_b = np.empty(nblocks, np.float64)
        matched = np.empty((_MATCHED, nblocks, num_classes), np.float32)
        class_b = np.zeros(num_classes, np.float64)
        moments = np.zeros((_MOMENTS, num_classes), np.float64)
        blocks = np.empty(nblocks, np.int64)
        num_kept, level_norm = _level_pass(probs, start, size, F32(threshold), block,
                                           F32(normalizer_power), count, block_b, matched,
                                           class_b, moments, blocks)
        normalizer += level_norm
        first_rows = start + blocks[:num_kept] * block
        kept_rows.append((first_rows[:, None] + np.arange(block)).reshape(-1))
        kept_rows[-1] = kept_rows[-1][kept_rows[-1] < start + size]
        per_class = count.sum(axis=0, dtype=np.float64)
        mean = -class_b / np.maximum(per_class, 1.0)
        level_codes, stats = _bin_blocks(count, block_b, matched, mean)
        prior = (per_class * a0 ** 3 + 3 * a0 * a0 * b0 * moments[0] + 3 * a0 * b0 * b0 * moments[1]
                 + b0 ** 3 * moments[2])
        contrast, scale = _calibrate(stats, prior, moments[3], mean, threshold, a0, b0)
        fills.append(np.stack([mean, scale, contrast]))
        codes.append(level_codes)
        start += size
    rows = np.concatenate(kept_rows)
    positions, values = _kept_entries(probs, rows, threshold, value_low, value_step, value_max_code)
    return np.stack(fills, axis=1), np.concatenate(codes), positions, values, normalizer


@njit(**_KERNEL)
def _level_pass(probs, start, size, threshold, block, theta, count, block_b, matched, class_b,
                moments, kept_blocks):
    """Walk rows [start, start + size) block by block (see the module docstring).

    Writes count, block_b (Σ over the block's classes of b), matched and the blocks that hold
    a kept entry; adds to class_b and moments. Returns (number of such blocks, Σ q^θ)."""
    num_classes = probs.shape[1]
    acc = np.zeros((6 + _MOMENTS, num_classes), np.float32)
    num_kept = 0
    normalizer = 0.0
    for blk in range(count.shape[0]):
        acc[:] = ZERO
        first = start + blk * block
        for r in range(first, min(first + block, start + size)):
            row = probs[r]
            row_norm = ZERO
            for c in range(num_classes):
                x = row[c]
                log_x = log_pos(max(x, _MIN_SCORE))
                row_norm += exp_neg(min(theta * log_x, ZERO)) if x > ZERO else ZERO
                dropped = x < threshold
                q = x if dropped else ZERO
                a = q * (ONE + q * (F32(1 / 2) + q * (F32(1 / 3) + q * (F32(1 / 4) + q * F32(1 / 5)))))
                b = (-a - log_x) if dropped else ZERO                       # log((1 - q) / q)
                a2, b2, q2 = a * a, b * b, q * q
                d = a + q * b
                acc[0, c] += ONE if dropped else ZERO
                acc[1, c] += b
                acc[2, c] += a2 * a
                acc[3, c] += a2 * b
                acc[4, c] += a * b2
                acc[5, c] += b2 * b
                acc[6, c] += q
                acc[7, c] += q2
                acc[8, c] += q2 * q
                acc[9, c] += d * d * d
            normalizer += np.float64(row_norm)
        # a block with a kept entry: fewer dropped than entries (counting kept entries or a
        # max in the class loop would stop LLVM vectorising it)
        total_b = 0.0
        total_dropped = ZERO
        for c in range(num_classes):
            count[blk, c] = acc[0, c]
            total_dropped += acc[0, c]
            total_b += np.float64(acc[1, c])
            class_b[c] += np.float64(acc[1, c])
            for k in range(_MATCHED):
                matched[k, blk, c] = acc[2 + k, c]
            for k in range(_MOMENTS):
                moments[k, c] += np.float64(acc[6 + k, c])
        block_b[blk] = total_b
        if total_dropped < F32((min(first + block, start + size) - first) * num_classes):
            kept_blocks[num_kept] = blk
            num_kept += 1
    return num_kept, normalizer


@njit(**_KERNEL)
def _bin_blocks(count, block_b, matched, mean):
    """Block offsets u = mean over the block's dropped entries of (logit - class mean logit),
    coded to int8; and per code and class [count, Σa³, Σa²b, Σab², Σb³] (5, codes, C)."""
    nblocks, num_classes = count.shape
    codes = np.empty(nblocks, np.int8)
    index = np.empty(nblocks, np.int64)
    for blk in range(nblocks):
        n = 0.0
        weighted_mean = 0.0
        for c in range(num_classes):
            n += np.float64(count[blk, c])
            weighted_mean += np.float64(count[blk, c]) * mean[c]
        u = -(block_b[blk] + weighted_mean) / max(n, 1.0)
        code = min(max(np.rint(u / OFFSET_STEP), -OFFSET_CODES), OFFSET_CODES)
        codes[blk] = np.int8(code)
        index[blk] = int(code) + OFFSET_CODES
    stats = np.zeros((1 + _MATCHED, 2 * OFFSET_CODES + 1, num_classes), np.float64)
    _add_rows(stats[0], count, index)
    for t in range(_MATCHED):  # one source and one target per loop: it vectorises
        _add_rows(stats[1 + t], matched[t], index)
    return codes, stats


@njit(**_KERNEL)
def _add_rows(target, rows, index):
    """target[index[i]] += rows[i] for every row i (float64 sums of float32 rows)."""
    for i in range(rows.shape[0]):
        out = target[index[i]]
        row = rows[i]
        for c in range(row.shape[0]):
            out[c] += np.float64(row[c])


@njit(**_KERNEL)
def _sigmoid(x):
    e = np.float64(exp_neg(F32(-abs(x))))
    return 1.0 / (1.0 + e) if x >= 0.0 else e / (1.0 + e)


@njit(**_KERNEL)
def _calibrate(stats, prior, matched_target, mean, threshold, a0, b0):
    """Contrast by bisection (the matching student's loss), scale by Newton (the prior
    student's), per class over the codes in use; see shards.background. Returns
    (contrast, scale), each (C,) float64."""
    num_classes = mean.shape[0]
    used = np.nonzero(stats[0].sum(axis=1) > 0)[0]
    grid = (used.astype(np.float64) - OFFSET_CODES) * OFFSET_STEP
    count = stats[0][used]                                        # (U, C)
    low = np.zeros(num_classes)
    high = np.full(num_classes, CONTRAST_MAX)
    base = np.empty((len(used), num_classes))
    scale = np.zeros(num_classes)
    for step in range(CONTRAST_STEPS):
        mid = 0.5 * (low + high)
        _bases(grid, mid, mean, base)
        scale = _prior_scale(count, prior, base, threshold, scale, step == 0, SCALE_STEPS, a0, b0)
        loss = _matched_loss(stats, used, base, scale, threshold)
        for c in range(num_classes):
            if loss[c] > matched_target[c]:
                high[c] = mid[c]
            else:
                low[c] = mid[c]
    contrast = 0.5 * (low + high)
    _bases(grid, contrast, mean, base)
    scale = _prior_scale(count, prior, base, threshold, scale, False, 2 * SCALE_STEPS, a0, b0)
    return contrast, scale


@njit(**_KERNEL)
def _bases(grid, contrast, mean, base):
    """base[k, c] = sigmoid(grid[k] * contrast[c] + mean[c])."""
    for k in range(grid.shape[0]):
        for c in range(mean.shape[0]):
            base[k, c] = _sigmoid(grid[k] * contrast[c] + mean[c])


@njit(**_KERNEL)
def _prior_scale(count, target, base, threshold, scale, first, steps, a0, b0):
    """Scale (C,) with Σ count · (a0 + min(scale · base, threshold) b0)³ == target (Newton,
    from ``scale``, or when ``first`` from the scale that keeps the mean)."""
    num_codes, num_classes = base.shape
    scale = scale.copy()
    if first:
        total = np.zeros(num_classes)
        n = np.zeros(num_classes)
        for k in range(num_codes):
            for c in range(num_classes):
                total[c] += count[k, c] * base[k, c]
                n[c] += count[k, c]
        for c in range(num_classes):
            start = max((target[c] / max(n[c], 1.0)) ** (1.0 / 3.0) - a0, 0.0) / b0
            scale[c] = start * n[c] / total[c] if total[c] > 0 else 0.0
    value = np.empty(num_classes)
    slope = np.empty(num_classes)
    for _ in range(steps):
        value[:] = -target
        slope[:] = 0.0
        for k in range(num_codes):
            for c in range(num_classes):
                q = scale[c] * base[k, c]
                free = q < threshold
                d = a0 + (q if free else threshold) * b0
                value[c] += count[k, c] * d * d * d
                slope[c] += count[k, c] * 3.0 * d * d * b0 * base[k, c] if free else 0.0
        for c in range(num_classes):
            if slope[c] > 0:
                scale[c] = max(scale[c] - value[c] / slope[c], 0.0)
    return scale


@njit(**_KERNEL)
def _matched_loss(stats, used, base, scale, threshold):
    """Σ over codes of Σ (a + q' b)³ with q' = min(scale · base, threshold), per class."""
    num_classes = base.shape[1]
    loss = np.zeros(num_classes)
    for i in range(used.shape[0]):
        k = used[i]
        for c in range(num_classes):
            q = min(scale[c] * base[i, c], threshold)
            loss[c] += (stats[1, k, c] + 3.0 * q * stats[2, k, c] + 3.0 * q * q * stats[3, k, c]
                        + q * q * q * stats[4, k, c])
    return loss


@njit(**_KERNEL)
def _kept_entries(probs, rows, threshold, low, step, max_code):
    """Flat positions (ascending) and logit codes of the entries >= threshold in ``rows``."""
    num_classes = probs.shape[1]
    total = 0
    for r in rows:
        for c in range(num_classes):
            total += probs[r, c] >= threshold
    positions = np.empty(total, np.int64)
    values = np.empty(total, np.int64)
    i = 0
    for r in rows:
        for c in range(num_classes):
            x = probs[r, c]
            if x >= threshold:
                s = min(max(np.float64(x), threshold), 0.9999)
                code = np.rint((math.log(s) - math.log1p(-s) - low) / step)
                positions[i] = r * num_classes + c
                values[i] = int(min(max(code, 0.0), max_code))
                i += 1
    return positions, values
