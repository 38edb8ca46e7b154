"""Sparse codec for teacher class scores: keep the informative entries, stand in for the rest.

A view's dense sigmoid scores ``probs: (HWA, C)`` are nearly all tiny background values.

* Kept entries: every ``q >= threshold``, stored as its flat position (anchor * C + class) and
  its logit quantized to 16 bits between ``logit(threshold)`` and ``LOGIT_MAX``.
* Dropped entries (``q < threshold``) decode to background stand-ins, one value per block of
  ``block`` consecutive anchors (9 = one feature-map cell with A = 9) and class:
  ``min(scale * sigmoid(contrast * u[block] + mean), threshold)`` with ``mean``, ``scale``,
  ``contrast`` per (level, class) and ``u`` one 8-bit offset per block, the background
  "objectness" all classes share. ``scale`` and ``contrast`` are calibrated on the dense
  scores so that an untrained student (p = 0.01) and a student matching the teacher (p = q)
  get the dense adaptive distillation loss on the dropped entries (``shards.background``).

Payload (numeric arrays only, each stored as one ``.npy`` member)::

    level_sizes    (L,)          uint32   anchors per level (HWA = sum)
    fill           (3, L, C)     float32  [mean logit, scale, contrast] of the stand-ins
    block_offsets  (sum ceil(n_l / block),) int8  u / OFFSET_STEP per block
    chunk_counts   (ceil(HWA*C / CHUNK),)   uint32  kept entries per run of CHUNK positions
    offsets        (K,)          uint16   kept flat position modulo CHUNK, ascending
    values         (K,)          uint16   quantized logit of each kept entry

Decoding is a broadcast of one small table row per block plus one scatter of K values, so it
runs at memory speed.
"""
import functools
import math
from dataclasses import dataclass

import numpy as np

from shards import background
from shards.errors import CodecError

CHUNK_BITS = 16
CHUNK = 1 << CHUNK_BITS  # kept positions are stored as (chunk, 16-bit offset)
LOGIT_MAX = math.log(0.9999 / 0.0001)  # kept scores above 0.9999 are stored as 0.9999
VALUE_LEVELS = 1 << 16  # kept logits quantized to uint16
# The background calibration treats dropped entries as small-loss ones (ADL ~ D^3); above
# ~0.01 that degrades (synthetic embedded-size views: 2% ADL error at 0.02, 7% at 0.03).
MAX_THRESHOLD = 0.05
PAYLOAD_FIELDS = {  # name -> dtype
    "level_sizes": np.dtype("<u4"),
    "fill": np.dtype("<f4"),
    "block_offsets": np.dtype("i1"),
    "chunk_counts": np.dtype("<u4"),
    "offsets": np.dtype("<u2"),
    "values": np.dtype("<u2"),
}


@dataclass(frozen=True)
class SparseCodec:
    """Keeps entries with ``q >= threshold``; the others decode to per-block, per-class
    stand-ins calibrated on the loss (see the module docstring).

    Args:
        threshold: scores at or above it are kept (16-bit logit); the rest are stood in for.
            Lower keeps more (bigger, closer); 0.01 is the tested setting.
        block: anchors per background block (9 = one feature-map cell with A = 9).
    """

    threshold: float = 0.01
    block: int = 9

    name = "sparse-v1"

    def __post_init__(self):
        if not 0.0 < self.threshold <= MAX_THRESHOLD:
            raise CodecError(f"codec.threshold: must be in (0, {MAX_THRESHOLD}], got "
                             f"{self.threshold!r}")
        if not (isinstance(self.block, int) and self.block >= 1):
            raise CodecError(f"codec.block: must be a positive integer, got {self.block!r}")

    @property
    def params(self) -> dict:
        """JSON-able description for the manifest; ``codec_from_params`` inverts it."""
        return {"name": self.name, "threshold": float(self.threshold), "block": int(self.block)}

    def encode(self, probs, level_sizes) -> dict:
        """probs: (HWA, C) scores in [0, 1]; level_sizes: anchors per level (sum = HWA).

        Returns the payload, a dict of numeric arrays (see the module docstring)."""
        probs = _check_probs(probs)
        sizes = _check_level_sizes(level_sizes, probs.shape[0])
        flat = probs.reshape(-1)
        pos = np.flatnonzero(flat >= self.threshold)
        fill, block_codes = [], []
        start = 0
        for size in sizes.tolist():
            level_fill, level_codes = background.fit_level(
                probs[start:start + size], threshold=self.threshold, block=self.block)
            fill.append(level_fill)
            block_codes.append(level_codes)
            start += size
        nchunks = -(-flat.size // CHUNK)
        return {
            "level_sizes": sizes.astype(PAYLOAD_FIELDS["level_sizes"]),
            "fill": np.stack(fill, axis=1).astype(PAYLOAD_FIELDS["fill"]),
            "block_offsets": np.concatenate(block_codes),
            "chunk_counts": np.bincount(pos >> CHUNK_BITS, minlength=nchunks).astype("<u4"),
            "offsets": (pos & (CHUNK - 1)).astype(PAYLOAD_FIELDS["offsets"]),
            "values": self._quantize(flat[pos]),
        }

    def decode(self, payload, out=None):
        """Dense scores of one view: (HWA, C) float32. ``out`` (same shape, float32, C-contiguous)
        is filled and returned when given, which saves the allocation."""
        sizes, fill, block_offsets, counts, offsets, values = check_payload(payload, self.block)
        shape = (int(sizes.astype(np.int64).sum()), fill.shape[2])
        if out is None:
            out = np.empty(shape, np.float32)
        elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise CodecError(f"out: expected a C-contiguous float32 array of shape {shape}")
        start, first_block = 0, 0
        for level, size in enumerate(sizes.tolist()):
            nblocks = -(-size // self.block)
            codes = block_offsets[first_block:first_block + nblocks]
            background.render_level(out[start:start + size], fill[:, level], codes,
                                    threshold=self.threshold, block=self.block)
            start, first_block = start + size, first_block + nblocks
        out.reshape(-1)[kept_positions(counts, offsets)] = _value_table(self.threshold)[values]
        return out

    def _quantize(self, scores):
        low, step = _value_grid(self.threshold)
        scores = np.clip(scores.astype(np.float64), self.threshold, 0.9999)
        codes = np.rint((np.log(scores) - np.log1p(-scores) - low) / step)
        return np.clip(codes, 0, VALUE_LEVELS - 1).astype(PAYLOAD_FIELDS["values"])


def _value_grid(threshold):
    """(lowest logit, step) of the 16-bit grid of kept scores."""
    low = math.log(threshold / (1.0 - threshold))
    return low, (LOGIT_MAX - low) / (VALUE_LEVELS - 1)


@functools.lru_cache(maxsize=8)
def _value_table(threshold):
    """(VALUE_LEVELS,) float32: the score of every 16-bit code (read-only, shared)."""
    low, step = _value_grid(threshold)
    table = _sigmoid(low + step * np.arange(VALUE_LEVELS, dtype=np.float64)).astype(np.float32)
    table.flags.writeable = False
    return table


CODECS = {SparseCodec.name: SparseCodec}


def codec_from_params(params: dict):
    """Rebuild a codec from its ``params`` (as stored in a manifest)."""
    if not isinstance(params, dict) or params.get("name") not in CODECS:
        name = params.get("name") if isinstance(params, dict) else params
        raise CodecError(f"codec.name: unknown codec {name!r} (known: {', '.join(CODECS)})")
    kwargs = {k: v for k, v in params.items() if k != "name"}
    try:
        return CODECS[params["name"]](**kwargs)
    except TypeError as err:
        raise CodecError(f"codec: bad parameters {kwargs!r} ({err})") from None


def kept_positions(chunk_counts, offsets):
    """Flat positions (anchor * C + class) of the kept entries: (K,) int64, ascending."""
    chunk_starts = np.arange(len(chunk_counts), dtype=np.int64) << CHUNK_BITS
    return np.repeat(chunk_starts, chunk_counts.astype(np.int64)) + offsets


def kept_fraction_per_level(payload) -> list:
    """Fraction of each level's (anchor, class) entries that the payload keeps exactly."""
    sizes, fill, _, counts, offsets, _ = check_payload(payload)
    num_classes = fill.shape[2]
    anchors = kept_positions(counts, offsets) // num_classes
    level_of = np.searchsorted(np.cumsum(sizes.astype(np.int64)), anchors, side="right")
    kept = np.bincount(level_of, minlength=len(sizes))
    return [float(k) / (int(n) * num_classes) for k, n in zip(kept, sizes)]


def payload_nbytes(payload) -> int:
    """Bytes of the payload's array data (what the codec costs, without container overhead)."""
    return int(sum(np.asarray(a).nbytes for a in payload.values()))


def check_payload(payload, block=None):
    """Validate a payload's fields, dtypes and shapes (and its block count when ``block`` is
    given); returns its arrays in ``PAYLOAD_FIELDS`` order."""
    if not isinstance(payload, dict) or set(payload) != set(PAYLOAD_FIELDS):
        got = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise CodecError(f"payload: expected fields {sorted(PAYLOAD_FIELDS)}, got {got}")
    arrays = []
    for name, dtype in PAYLOAD_FIELDS.items():
        arr = np.asarray(payload[name])
        if arr.dtype != dtype:
            raise CodecError(f"payload.{name}: expected dtype {dtype}, got {arr.dtype}")
        arrays.append(arr)
    sizes, fill, block_offsets, counts, offsets, values = arrays
    if sizes.ndim != 1 or len(sizes) == 0 or sizes.min() == 0:
        raise CodecError(f"payload.level_sizes: expected positive sizes, got {sizes.tolist()}")
    if fill.ndim != 3 or fill.shape[:2] != (3, len(sizes)) or fill.shape[2] == 0:
        raise CodecError(f"payload.fill: shape {fill.shape} does not match {len(sizes)} levels")
    if block is not None and block_offsets.shape != (background.num_blocks(sizes, block),):
        raise CodecError(f"payload.block_offsets: shape {block_offsets.shape} does not match "
                         f"level_sizes with block={block}")
    total = int(sizes.astype(np.int64).sum()) * fill.shape[2]
    nchunks = -(-total // CHUNK)
    if counts.shape != (nchunks,) or offsets.ndim != 1 or values.shape != offsets.shape:
        raise CodecError("payload: chunk_counts/offsets/values have inconsistent shapes")
    if int(counts.astype(np.int64).sum()) != len(offsets):
        raise CodecError("payload.chunk_counts: counts do not add up to the kept entries")
    tail = total - (nchunks - 1) * CHUNK
    if counts[-1] and int(offsets[len(offsets) - int(counts[-1]):].max()) >= tail:
        raise CodecError("payload.offsets: position beyond the last anchor")
    if not (np.isfinite(fill).all() and fill[1].min() >= 0):
        raise CodecError("payload.fill: teacher scores contain NaN/inf")
    return arrays


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _check_probs(probs):
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.size == 0 or probs.dtype.kind != "f":
        raise CodecError(f"probs: expected a non-empty (HWA, C) float array, got "
                         f"{probs.dtype} {probs.shape}")
    probs = np.ascontiguousarray(probs, dtype=np.float32)
    low, high = probs.min(), probs.max()
    if not (low >= 0.0 and high <= 1.0):  # also false for NaN
        raise CodecError("probs: teacher scores contain NaN/inf or values outside [0, 1]")
    return probs


def _check_level_sizes(level_sizes, num_anchors):
    sizes = np.asarray(level_sizes)
    if (sizes.ndim != 1 or len(sizes) == 0 or sizes.dtype.kind not in "iu"
            or sizes.min() <= 0 or int(sizes.sum()) != num_anchors):
        raise CodecError(f"level_sizes: expected positive integers summing to HWA={num_anchors}, "
                         f"got {np.asarray(level_sizes).tolist()}")
    return sizes.astype(np.int64)
