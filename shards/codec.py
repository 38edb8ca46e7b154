"""Sparse codec for teacher class scores: keep the informative entries, stand in for the rest.

A view's dense sigmoid scores ``probs: (HWA, C)`` are nearly all tiny background values.

* Kept entries: every ``q >= threshold``, stored as its flat position (anchor * C + class) and
  its logit quantized to ``value_bits`` bits between ``logit(threshold)`` and ``LOGIT_MAX``.
* Dropped entries (``q < threshold``) decode to background stand-ins, one value per block of
  ``block`` consecutive anchors (9 = one feature-map cell with A = 9) and class:
  ``min(scale * sigmoid(contrast * u[block] + mean), threshold)`` with ``mean``, ``scale``,
  ``contrast`` per (level, class) and ``u`` one 8-bit offset per block, the background
  "objectness" all classes share. ``scale`` and ``contrast`` are calibrated on the dense
  scores so that an untrained student (p = 0.01) and a student matching the teacher (p = q)
  get the dense adaptive distillation loss on the dropped entries (``shards.background``).

Encoding is one pass over the dense scores (``shards.encode``, numba), which also gives the
ADL normaliser Σ q^θ (``encode_view``).

Payload (the arrays ``encode`` returns and ``decode`` takes)::

    level_sizes    (L,)          uint32   anchors per level (HWA = sum)
    fill           (3, L, C)     float32  [mean logit, scale, contrast] of the stand-ins
    block_offsets  (sum ceil(n_l / block),) int8  u / OFFSET_STEP per block
    positions      (K,)          int64    flat position of each kept entry, ascending
    values         (K,)          uint16   quantized logit of each kept entry (< 2**value_bits)

Stored form (``pack_payload`` / ``unpack_payload``, format 2): one zlib stream of a header
(six uint32: L, C, number of blocks, K, bytes of the position gaps, value byte planes),
level_sizes, fill, the block offsets as differences of consecutive ones (the background
field is smooth), the kept positions as LEB128 varints of their gaps (first position, then
position - previous - 1: one byte for nearly every kept entry) and the values as byte
planes (low bytes, then high bytes when a code exceeds 255), all little-endian. Decoding is
one inflate, one varint scan, a broadcast of one small table row per block and one scatter of
K values, so it runs at memory speed.
"""
import functools
import math
import zlib
from dataclasses import dataclass

import numpy as np
from numba import njit

from cuda_ops.constants import NORMALIZER_POWER
from shards import background
from shards.encode import encode_view
from shards.errors import CodecError

LOGIT_MAX = math.log(0.9999 / 0.0001)  # kept scores above 0.9999 are stored as 0.9999
# Kept logits are quantized to 11 bits by default (``value_bits``, 8-16): measured with
# ``python -m sadpipe.bench.codec_quality`` on the zoo teacher and the demo's trained student
# (50 val images, 100 views), worst |ADL error| / gradient cosine 4.54 % / 0.999292 at 16
# bits, 4.52 % / 0.999280 at 11, 4.53 % / 0.998862 at 8; stored size 25.3x -> 31.4x -> 36.3x
# smaller than dense fp16.
VALUE_BITS = 11
VALUE_LEVELS = 1 << VALUE_BITS
# The background calibration treats dropped entries as small-loss ones (ADL ~ D^3); above
# ~0.01 that degrades (synthetic embedded-size views: 2% ADL error at 0.02, 7% at 0.03).
MAX_THRESHOLD = 0.05
PAYLOAD_FIELDS = {  # name -> dtype
    "level_sizes": np.dtype("<u4"),
    "fill": np.dtype("<f4"),
    "block_offsets": np.dtype("i1"),
    "positions": np.dtype("<i8"),
    "values": np.dtype("<u2"),
}
HEADER = np.dtype("<u4")  # L, C, blocks, K, gap bytes, value byte planes
HEADER_FIELDS = 6
ZLIB_LEVEL = 6  # measured: level 1 stores ~1 % more, level 9 is no smaller


@dataclass(frozen=True)
class SparseCodec:
    """Keeps entries with ``q >= threshold``; the others decode to per-block, per-class
    stand-ins calibrated on the loss (see the module docstring).

    Args:
        threshold: scores at or above it are kept (quantized logit); the rest are stood in
            for. Lower keeps more (bigger, closer); 0.01 is the tested setting.
        block: anchors per background block (9 = one feature-map cell with A = 9).
        value_bits: bits of a kept score's logit code, 8-16 (``2**value_bits`` levels
            between ``logit(threshold)`` and ``LOGIT_MAX``).
    """

    threshold: float = 0.01
    block: int = 9
    value_bits: int = VALUE_BITS

    name = "sparse-v2"

    def __post_init__(self):
        if not 0.0 < self.threshold <= MAX_THRESHOLD:
            raise CodecError(f"codec.threshold: must be in (0, {MAX_THRESHOLD}], got "
                             f"{self.threshold!r}")
        if not (isinstance(self.block, int) and self.block >= 1):
            raise CodecError(f"codec.block: must be a positive integer, got {self.block!r}")
        if not (isinstance(self.value_bits, int) and 8 <= self.value_bits <= 16):
            raise CodecError(f"codec.value_bits: must be an integer in [8, 16], got "
                             f"{self.value_bits!r}")

    @property
    def params(self) -> dict:
        """JSON-able description for the manifest; ``codec_from_params`` inverts it."""
        return {"name": self.name, "threshold": float(self.threshold), "block": int(self.block),
                "value_bits": int(self.value_bits)}

    def encode(self, probs, level_sizes) -> dict:
        """probs: (HWA, C) scores in [0, 1]; level_sizes: anchors per level (sum = HWA).

        Returns the payload, a dict of numeric arrays (see the module docstring)."""
        return self.encode_view(probs, level_sizes)[0]

    def encode_view(self, probs, level_sizes, *,
                    normalizer_power=NORMALIZER_POWER) -> tuple[dict, float]:
        """The payload and the ADL normaliser Σ q^θ of the dense scores (θ =
        ``normalizer_power``), from one pass. ``probs``: a numpy array or CPU tensor (numba,
        float32-accurate terms summed in float64), or a torch tensor on a GPU (encoded there
        by ``shards.encode_torch``; only the payload is copied to the host)."""
        if _on_device(probs):
            from shards.encode_torch import encode_view_torch as encode
            probs = _check_device_probs(probs)
        else:
            encode = encode_view
            probs = _check_probs(probs)
        sizes = _check_level_sizes(level_sizes, probs.shape[0])
        low, step = _value_grid(self.threshold, self.value_bits)
        fill, codes, positions, values, normalizer = encode(
            probs, sizes, threshold=self.threshold, block=self.block, value_low=low,
            value_step=step, value_max_code=(1 << self.value_bits) - 1,
            normalizer_power=normalizer_power)
        payload = {
            "level_sizes": sizes.astype(PAYLOAD_FIELDS["level_sizes"]),
            "fill": fill.astype(PAYLOAD_FIELDS["fill"]),
            "block_offsets": codes,
            "positions": positions.astype(PAYLOAD_FIELDS["positions"]),
            "values": values.astype(PAYLOAD_FIELDS["values"]),
        }
        return payload, normalizer

    def decode(self, payload, out=None):
        """Dense scores of one view: (HWA, C) float32. ``out`` (same shape, float32, C-contiguous)
        is filled and returned when given, which saves the allocation."""
        sizes, fill, block_offsets, positions, values = check_payload(payload, self.block)
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
        if len(values) and int(values.max()) >> self.value_bits:
            raise CodecError(f"payload.values: codes beyond {self.value_bits} bits")
        out.reshape(-1)[positions] = _value_table(self.threshold, self.value_bits)[values]
        return out


def _value_grid(threshold, bits=VALUE_BITS):
    """(lowest logit, step) of the ``bits``-bit grid of kept scores."""
    low = math.log(threshold / (1.0 - threshold))
    return low, (LOGIT_MAX - low) / ((1 << bits) - 1)


@functools.lru_cache(maxsize=8)
def _value_table(threshold, bits=VALUE_BITS):
    """(2**bits,) float32: the score of every code (read-only, shared)."""
    low, step = _value_grid(threshold, bits)
    table = _sigmoid(low + step * np.arange(1 << bits, dtype=np.float64)).astype(np.float32)
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


def kept_fraction_per_level(payload) -> list:
    """Fraction of each level's (anchor, class) entries that the payload keeps exactly."""
    sizes, fill, _, positions, _ = check_payload(payload)
    num_classes = fill.shape[2]
    level_of = np.searchsorted(np.cumsum(sizes.astype(np.int64)), positions // num_classes,
                               side="right")
    kept = np.bincount(level_of, minlength=len(sizes))
    return [float(k) / (int(n) * num_classes) for k, n in zip(kept, sizes)]


def payload_nbytes(payload) -> int:
    """Bytes of the payload's stored form (``pack_payload``), without container overhead."""
    return len(pack_payload(payload))


def pack_payload(payload) -> bytes:
    """The stored form of a payload (see the module docstring); ``unpack_payload`` inverts it."""
    sizes, fill, block_offsets, positions, values = check_payload(payload, finite=False)
    gaps = _varint_gaps(positions)
    planes = 2 if len(values) and int(values.max()) > 0xFF else 1
    header = np.array([len(sizes), fill.shape[2], len(block_offsets), len(positions), len(gaps),
                       planes], HEADER)
    deltas = np.diff(block_offsets.astype(np.int16), prepend=0).astype(np.uint8)  # wraps
    value_planes = [(values & 0xFF).astype(np.uint8)] + [(values >> 8).astype(np.uint8)] * (planes - 1)
    parts = (header, sizes, fill, deltas, gaps, *value_planes)
    return zlib.compress(b"".join(np.ascontiguousarray(p).tobytes() for p in parts), ZLIB_LEVEL)


def unpack_payload(data) -> dict:
    """A payload from its stored form; CodecError (one line) on anything malformed."""
    try:
        raw = zlib.decompress(data)
    except (zlib.error, TypeError) as err:
        raise CodecError(f"payload: not a zlib stream ({err})") from None
    head = HEADER_FIELDS * HEADER.itemsize
    if len(raw) < head:
        raise CodecError("payload: shorter than its header")
    levels, classes, blocks, kept, gap_bytes, planes = (
        int(v) for v in np.frombuffer(raw[:head], HEADER))
    if planes not in (1, 2):
        raise CodecError(f"payload: {planes} value planes (1 or 2)")
    layout = [("level_sizes", levels, "<u4"), ("fill", 3 * levels * classes, "<f4"),
              ("deltas", blocks, "u1"), ("gaps", gap_bytes, "u1"), ("low", kept, "u1"),
              ("high", kept if planes == 2 else 0, "u1")]
    arrays, offset = {}, head
    for name, count, dtype in layout:
        nbytes = count * np.dtype(dtype).itemsize
        if offset + nbytes > len(raw):
            raise CodecError(f"payload: truncated in {name}")
        arrays[name] = np.frombuffer(raw, dtype, count, offset)
        offset += nbytes
    if offset != len(raw):
        raise CodecError(f"payload: {len(raw) - offset} bytes after the values")
    positions = _positions_from_gaps(arrays["gaps"], kept)
    if positions is None:
        raise CodecError("payload: the kept positions do not decode")
    values = arrays["low"].astype(np.uint16)
    if planes == 2:
        values |= arrays["high"].astype(np.uint16) << 8
    return {"level_sizes": arrays["level_sizes"],
            "fill": arrays["fill"].reshape(3, levels, classes),
            "block_offsets": np.cumsum(arrays["deltas"], dtype=np.uint8).view(np.int8),
            "positions": positions,
            "values": values}


@njit(cache=True, nogil=True)
def _varint_gaps(positions):
    """LEB128 bytes of (positions[0], positions[i] - positions[i-1] - 1 ...)."""
    out = np.empty(10 * len(positions), np.uint8)
    n, previous = 0, -1
    for p in positions:
        gap = p - previous - 1
        previous = p
        while gap >= 0x80:
            out[n] = (gap & 0x7F) | 0x80
            gap >>= 7
            n += 1
        out[n] = gap
        n += 1
    return out[:n].copy()


@njit(cache=True, nogil=True)
def _positions_from_gaps(gaps, count):
    """Inverse of ``_varint_gaps``; None when the bytes do not hold exactly ``count`` gaps."""
    positions = np.empty(count, np.int64)
    i, shift, gap, previous = 0, 0, 0, -1
    for byte in gaps:
        if i == count or shift > 56:
            return None
        gap |= np.int64(byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
            continue
        previous += gap + 1
        positions[i] = previous
        i, shift, gap = i + 1, 0, 0
    if i != count or shift:
        return None
    return positions


def check_payload(payload, block=None, *, finite=True):
    """Validate a payload's fields, dtypes and shapes (and its block count when ``block`` is
    given, that its stand-in parameters are finite when ``finite``); returns its arrays in
    ``PAYLOAD_FIELDS`` order."""
    if not isinstance(payload, dict) or set(payload) != set(PAYLOAD_FIELDS):
        got = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise CodecError(f"payload: expected fields {sorted(PAYLOAD_FIELDS)}, got {got}")
    arrays = []
    for name, dtype in PAYLOAD_FIELDS.items():
        arr = np.asarray(payload[name])
        if arr.dtype != dtype:
            raise CodecError(f"payload.{name}: expected dtype {dtype}, got {arr.dtype}")
        arrays.append(arr)
    sizes, fill, block_offsets, positions, values = arrays
    if sizes.ndim != 1 or len(sizes) == 0 or sizes.min() == 0:
        raise CodecError(f"payload.level_sizes: expected positive sizes, got {sizes.tolist()}")
    if fill.ndim != 3 or fill.shape[:2] != (3, len(sizes)) or fill.shape[2] == 0:
        raise CodecError(f"payload.fill: shape {fill.shape} does not match {len(sizes)} levels")
    if block is not None and block_offsets.shape != (background.num_blocks(sizes, block),):
        raise CodecError(f"payload.block_offsets: shape {block_offsets.shape} does not match "
                         f"level_sizes with block={block}")
    if positions.ndim != 1 or values.shape != positions.shape:
        raise CodecError("payload: positions/values have inconsistent shapes")
    total = int(sizes.astype(np.int64).sum()) * fill.shape[2]
    if len(positions) and (positions[0] < 0 or positions[-1] >= total
                           or (len(positions) > 1 and np.diff(positions).min() <= 0)):
        raise CodecError("payload.positions: not ascending positions inside the view")
    if finite and not (np.isfinite(fill).all() and fill[1].min() >= 0):
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


def _on_device(probs):
    """A torch tensor that is not on the CPU (shards does not import torch for this)."""
    device = getattr(probs, "device", None)
    return device is not None and getattr(device, "type", "cpu") != "cpu"


def _check_device_probs(probs):
    if probs.ndim != 2 or probs.numel() == 0 or not probs.is_floating_point():
        raise CodecError(f"probs: expected a non-empty (HWA, C) float tensor, got "
                         f"{probs.dtype} {tuple(probs.shape)}")
    probs = probs.float().contiguous()
    low, high = probs.aminmax()
    if not (float(low) >= 0.0 and float(high) <= 1.0):  # also false for NaN
        raise CodecError("probs: teacher scores contain NaN/inf or values outside [0, 1]")
    return probs


def _check_level_sizes(level_sizes, num_anchors):
    sizes = np.asarray(level_sizes)
    if (sizes.ndim != 1 or len(sizes) == 0 or sizes.dtype.kind not in "iu"
            or sizes.min() <= 0 or int(sizes.sum()) != num_anchors):
        raise CodecError(f"level_sizes: expected positive integers summing to HWA={num_anchors}, "
                         f"got {np.asarray(level_sizes).tolist()}")
    return sizes.astype(np.int64)
