"""The codec's first encoder (format 1, numpy, several passes), kept as the reference the
one-pass numba encoder (``shards.encode``) is tested against: the same block statistics,
block offsets and stand-in parameters, computed the plain way.

``reference_payload(probs, level_sizes, threshold=..., block=...)`` returns fill (3, L, C),
block offsets, kept positions and their 16-bit logit codes.
"""
import math

import numpy as np

from shards.background import (
    CONTRAST_MAX,
    CONTRAST_STEPS,
    MIN_SCORE,
    OFFSET_CODES,
    OFFSET_STEP,
    SCALE_STEPS,
    _offset_grid,
    _sigmoid,
    _stand_ins,
    prior_cross_entropy,
)
from shards.codec import LOGIT_MAX, VALUE_BITS

MATCHED_TERMS = ("a3", "a2b", "ab2", "b3")
CHUNK_ROWS = 2048  # rows per pass of _block_statistics (keeps its temporaries in cache)


def reference_payload(probs, level_sizes, *, threshold, block, value_bits=VALUE_BITS):
    """(fill, block_offsets, positions, values) as the format-1 encoder computed them (its
    16-bit logit codes generalised to ``value_bits``)."""
    fills, codes, start = [], [], 0
    for size in level_sizes:
        params, level_codes = fit_level(probs[start:start + size], threshold=threshold, block=block)
        fills.append(params)
        codes.append(level_codes)
        start += size
    flat = probs.reshape(-1)
    positions = np.flatnonzero(flat >= threshold)
    low = math.log(threshold / (1.0 - threshold))
    levels = 1 << value_bits
    step = (LOGIT_MAX - low) / (levels - 1)
    scores = np.clip(flat[positions].astype(np.float64), threshold, 0.9999)
    values = np.clip(np.rint((np.log(scores) - np.log1p(-scores) - low) / step), 0, levels - 1)
    return np.stack(fills, axis=1), np.concatenate(codes), positions, values.astype(np.int64)


def fit_level(probs, *, threshold, block):
    """Fit the stand-ins of one level.

    Args:
        probs: (n, C) float32 dense scores of the level.
        threshold: entries with q >= threshold are kept elsewhere and ignored here.
        block: anchors per block.

    Returns:
        params: (3, C) float64, rows ``PARAMS``; codes: (ceil(n / block),) int8 block offsets.
    """
    sums = _block_statistics(probs, threshold, block)
    count, b_sum = sums["count"], sums["b"]
    per_class = count.sum(axis=0, dtype=np.float64)
    mean = -b_sum.sum(axis=0, dtype=np.float64) / np.maximum(per_class, 1)  # mean logit (C,)
    # block offset: mean over the block's dropped entries of (logit - mean logit of class)
    u = -(b_sum.sum(axis=1, dtype=np.float64) + count.astype(np.float64) @ mean)
    u /= np.maximum(count.sum(axis=1), 1)
    codes = np.clip(np.rint(u / OFFSET_STEP), -OFFSET_CODES, OFFSET_CODES).astype(np.int8)
    index = codes.astype(np.intp) + OFFSET_CODES
    stats = np.stack([_per_code(sums[k], index) for k in ("count",) + MATCHED_TERMS])
    moments = [sums[k].sum(axis=0, dtype=np.float64) for k in ("q", "q2", "q3")]
    a0, b0 = prior_cross_entropy()
    prior = (per_class * a0 ** 3 + 3 * a0 * a0 * b0 * moments[0] + 3 * a0 * b0 * b0 * moments[1]
             + b0 ** 3 * moments[2])
    matched = sums["d3"].sum(axis=0, dtype=np.float64)
    contrast, scale = _calibrate(stats, np.stack([prior, matched]), mean, threshold)
    return np.stack([mean, scale, contrast]), codes




def _block_statistics(probs, threshold, block):
    """Per (block, class) sums over the dropped entries, (nblocks, C) float32 each:
    count, b, a³, a²b, ab², b³, q, q², q³ and d3 = (a + q b)³, where CE(q', p=q) = a + q' b
    (a = -log(1-q), b = log((1-q)/q)) is the matching student's cross-entropy."""
    n, num_classes = probs.shape
    nblocks = -(-n // block)
    names = ("count", "b") + MATCHED_TERMS + ("q", "q2", "q3", "d3")
    sums = {k: np.empty((nblocks, num_classes), np.float32) for k in names}
    rows = max(block, CHUNK_ROWS // block * block)
    for start in range(0, n, rows):
        chunk = probs[start:start + rows]
        first = start // block
        dropped = chunk < threshold
        q = np.where(dropped, chunk, np.float32(0))
        a = -np.log1p(-q)
        b = np.log(np.maximum(q, np.float32(MIN_SCORE)))
        np.subtract(-a, b, out=b)
        b *= dropped
        a2, b2, q2 = a * a, b * b, q * q
        values = {"count": dropped.astype(np.float32), "b": b, "a3": a2 * a, "a2b": a2 * b,
                  "ab2": a * b2, "b3": b2 * b, "q": q, "q2": q2, "q3": q2 * q}
        d = q * b
        d += a
        values["d3"] = d * d * d
        for k, v in values.items():
            part = _block_sums(v, block)
            sums[k][first:first + len(part)] = part
    return sums


def _calibrate(stats, targets, mean, threshold):
    """Contrast by bisection (matching student), scale by Newton (prior student).

    stats: (5, codes, C) per-code [count, Σa³, Σa²b, Σab², Σb³]; targets: (2, C) dense Σ D³
    of the prior and matching students."""
    grid = _offset_grid()
    low, high = np.zeros_like(mean), np.full_like(mean, CONTRAST_MAX)
    scale = None
    for _ in range(CONTRAST_STEPS):
        mid = 0.5 * (low + high)
        scale = _prior_scale(stats[0], targets[0], _sigmoid(grid * mid + mean), threshold, scale)
        above = _matched_loss(stats, np.stack([mean, scale, mid]), threshold) > targets[1]
        high, low = np.where(above, mid, high), np.where(above, low, mid)
    contrast = 0.5 * (low + high)
    return contrast, _prior_scale(stats[0], targets[0], _sigmoid(grid * contrast + mean),
                                  threshold, scale, steps=2 * SCALE_STEPS)


def _prior_scale(count, target, base, threshold, scale=None, steps=None):
    """Scale (C,) with Σ count * (a0 + min(scale * base, threshold) b0)^3 == target (Newton;
    ``scale`` is the starting point, else the scale that keeps the mean)."""
    a0, b0 = prior_cross_entropy()
    if scale is None:
        total = (count * base).sum(axis=0)
        first = np.maximum(np.cbrt(target / np.maximum(count.sum(axis=0), 1)) - a0, 0) / b0
        scale = np.where(total > 0, first * count.sum(axis=0) / np.where(total > 0, total, 1), 0)
    for _ in range(steps or SCALE_STEPS):
        q = scale * base
        free = q < threshold
        d = a0 + np.where(free, q, threshold) * b0
        value = (count * d ** 3).sum(axis=0) - target
        slope = (count * 3 * d * d * b0 * base * free).sum(axis=0)
        scale = np.where(slope > 0, np.maximum(scale - value / np.where(slope > 0, slope, 1), 0),
                         scale)
    return scale


def _matched_loss(stats, params, threshold):
    q = _stand_ins(params, threshold)
    return (stats[1] + 3 * q * stats[2] + 3 * q * q * stats[3] + q ** 3 * stats[4]).sum(axis=0)


def _per_code(per_block, index):
    """Sum (nblocks, C) rows into (codes, C) by block offset code."""
    num_codes, num_classes = 2 * OFFSET_CODES + 1, per_block.shape[1]
    flat = (index[:, None] * num_classes + np.arange(num_classes)).reshape(-1)
    sums = np.bincount(flat, weights=per_block.reshape(-1).astype(np.float64),
                       minlength=num_codes * num_classes)
    return sums.reshape(num_codes, num_classes)


def _block_sums(arr, block):
    """(n, C) -> (ceil(n / block), C): sums over runs of ``block`` rows (last run padded)."""
    n = arr.shape[0]
    full = n // block
    sums = arr[:full * block].reshape(full, block, -1).sum(axis=1)
    if full * block < n:
        sums = np.concatenate([sums, arr[full * block:].sum(axis=0, keepdims=True)])
    return sums
