"""The sparse codec's encoder in torch, for scores that are already on a GPU.

Computes on the scores' device what :mod:`shards.encode` computes in numba — the per-block
sums over the dropped entries, the block offsets and their per-code sums, the per-class
moments, the kept entries and the normaliser — so that only the small results cross to the
host: block offsets (one byte per block), per-code sums (5 × 255 × C), the kept entries and a
few per-class numbers. The calibration then runs on the host (``shards.encode._calibrate``).

Used by ``SparseCodec.encode_view`` for torch tensors not on the CPU; on CPU tensors it
computes the same payload (tested against the numba encoder).
"""
import torch

from shards.background import MIN_SCORE, OFFSET_CODES, OFFSET_STEP, prior_cross_entropy
from shards.encode import _calibrate

NUM_CODES = 2 * OFFSET_CODES + 1


def encode_view_torch(probs, level_sizes, *, threshold, block, value_low, value_step,
                      value_max_code, normalizer_power):
    """Same arguments and results as :func:`shards.encode.encode_view`; ``probs`` is a
    (HWA, C) float32 tensor on any device."""
    num_classes = probs.shape[1]
    a0, b0 = prior_cross_entropy()
    fills, codes, start = [], [], 0
    for size in level_sizes.tolist():
        level = probs[start:start + size]
        count, matched, block_b, moments = _block_sums(level, threshold, block)
        per_class = count.sum(0, dtype=torch.float64)
        mean = -moments[0] / per_class.clamp(min=1.0)
        u = -(block_b + count.double() @ mean) / count.sum(1, dtype=torch.float64).clamp(min=1.0)
        level_codes = torch.round(u / OFFSET_STEP).clamp(-OFFSET_CODES, OFFSET_CODES)
        index = level_codes.long() + OFFSET_CODES
        stats = torch.zeros(5, NUM_CODES, num_classes, dtype=torch.float64, device=probs.device)
        stats[0].index_add_(0, index, count.double())
        for t in range(4):
            stats[1 + t].index_add_(0, index, matched[t].double())
        prior = (per_class * a0 ** 3 + 3 * a0 * a0 * b0 * moments[1]
                 + 3 * a0 * b0 * b0 * moments[2] + b0 ** 3 * moments[3])
        host = [t.cpu().numpy() for t in (stats, prior, moments[4], mean)]
        contrast, scale = _calibrate(*host, threshold, a0, b0)
        fills.append(torch.stack([torch.from_numpy(host[3]), torch.from_numpy(scale),
                                  torch.from_numpy(contrast)]))
        codes.append(level_codes.to(torch.int8).cpu())
        start += size
    positions, values = _kept_entries(probs, threshold, value_low, value_step, value_max_code)
    normalizer = float((probs.double() ** normalizer_power).sum())
    return (torch.stack(fills, dim=1).numpy(), torch.cat(codes).numpy(), positions.cpu().numpy(),
            values.cpu().numpy(), normalizer)


def _block_sums(level, threshold, block):
    """Per (block, class) count and [Σa³, Σa²b, Σab², Σb³] over dropped entries, per block Σb,
    and per class [Σb, Σq, Σq², Σq³, Σd³] (float64)."""
    n, num_classes = level.shape
    nblocks = -(-n // block)
    padded = level.new_full((nblocks * block, num_classes), threshold)  # padding: not dropped
    padded[:n] = level
    dropped = padded < threshold
    q = torch.where(dropped, padded, torch.zeros_like(padded))
    a = -torch.log1p(-q)
    b = torch.where(dropped, -a - torch.log(q.clamp(min=MIN_SCORE)), torch.zeros_like(q))
    terms = torch.stack([dropped.float(), a ** 3, a * a * b, a * b * b, b ** 3, b])
    sums = terms.view(6, nblocks, block, num_classes).sum(2)
    d = a + q * b
    moments = torch.stack([b, q, q * q, q ** 3, d ** 3]).sum(1, dtype=torch.float64)
    return sums[0], sums[1:5], sums[5].sum(1, dtype=torch.float64), moments


def _kept_entries(probs, threshold, low, step, max_code):
    flat = probs.reshape(-1)
    positions = torch.nonzero(flat >= threshold).squeeze(1)
    s = flat[positions].double().clamp(threshold, 0.9999)
    codes = torch.round((torch.log(s) - torch.log1p(-s) - low) / step).clamp(0, max_code)
    return positions, codes.long()
