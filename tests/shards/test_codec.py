"""The sparse codec: exact structure on hand-made inputs, and ADL quality on teacher-like
scores against the independent float64 reference."""
import math

import numpy as np
import pytest

from shards import CodecError, SparseCodec, codec_from_params, kept_fraction_per_level
from shards.codec import (
    LOGIT_MAX,
    VALUE_LEVELS,
    _positions_from_gaps,
    _varint_gaps,
    pack_payload,
    payload_nbytes,
    unpack_payload,
)
from shards.quality import adl_and_grad, codec_error
from shards.synthetic import teacher_like_scores

from . import adl_reference as ref
from .reference_encoder import reference_payload

pytestmark = pytest.mark.numerics  # compares against an independent reference (float tolerances)


def logit(q):
    return np.log(q) - np.log1p(-q)


def level_sizes_for(height, width, anchors=9):
    """Anchors per level P3-P7 of a RetinaNet at input size height x width."""
    return [-(-height // s) * -(-width // s) * anchors for s in (8, 16, 32, 64, 128)]


def test_hand_made_view_keeps_exact_entries_and_fills_the_rest():
    probs = np.full((6, 2), 1e-4, np.float32)
    probs[1, 0], probs[4, 1], probs[5, 0] = 0.5, 0.02, 0.9
    codec = SparseCodec(threshold=0.01, block=3)
    payload = codec.encode(probs, [3, 3])
    # kept positions (anchor * C + class): 1*2+0, 4*2+1, 5*2+0
    assert payload["positions"].tolist() == [2, 9, 10]
    decoded = codec.decode(payload)
    assert decoded.dtype == np.float32 and decoded.shape == (6, 2)
    step = (LOGIT_MAX - logit(0.01)) / (VALUE_LEVELS - 1)
    kept = [(1, 0), (4, 1), (5, 0)]
    for a, c in kept:
        assert abs(logit(decoded[a, c].astype(np.float64)) - logit(float(probs[a, c]))) \
            <= step / 2 + 1e-6
    dropped = np.ones_like(probs, bool)
    for a, c in kept:
        dropped[a, c] = False
    # every dropped score is the same constant here: the stand-ins reproduce it
    np.testing.assert_allclose(decoded[dropped], 1e-4, rtol=1e-3)
    assert kept_fraction_per_level(payload) == [1 / 6, 2 / 6]


def test_quantization_error_of_kept_scores_is_half_a_step():
    rng = np.random.default_rng(0)
    probs = rng.uniform(0.01, 0.9999, (500, 4)).astype(np.float32)
    codec = SparseCodec(threshold=0.01)
    decoded = codec.decode(codec.encode(probs, [500]))
    step = (LOGIT_MAX - logit(0.01)) / (VALUE_LEVELS - 1)
    error = np.abs(logit(decoded.astype(np.float64)) - logit(probs.astype(np.float64)))
    assert error.max() <= step / 2 + 2e-5  # + float32 rounding of the stored score


def test_encoding_is_deterministic_and_round_trips_through_params():
    ls = level_sizes_for(64, 96)
    probs = teacher_like_scores(sum(ls), 5, level_sizes=ls, rng=np.random.default_rng(3))
    codec = codec_from_params(SparseCodec(threshold=0.02, block=4).params)
    assert codec == SparseCodec(threshold=0.02, block=4)
    first, second = codec.encode(probs, ls), codec.encode(probs.copy(), ls)
    for name in first:
        assert first[name].tobytes() == second[name].tobytes(), name
    out = np.empty_like(probs)
    assert codec.decode(first, out=out) is out
    np.testing.assert_array_equal(out, codec.decode(first))


def test_dropped_entries_never_decode_above_the_threshold():
    ls = level_sizes_for(64, 96)
    probs = teacher_like_scores(sum(ls), 5, level_sizes=ls, rng=np.random.default_rng(4))
    codec = SparseCodec(threshold=0.01)
    decoded = codec.decode(codec.encode(probs, ls))
    assert decoded[probs < 0.01].max() <= 0.01
    assert np.isfinite(decoded).all() and decoded.min() >= 0


@pytest.mark.parametrize("seed", [0, 1])
def test_codec_meets_the_adl_criteria_on_teacher_like_scores(seed):
    """ADL within 0.5% and gradient cosine >= 0.999 for an untrained and a trained student,
    payload >= 50x smaller than dense fp16. Control: a naive stand-in (mean of the dropped
    scores) misses the criterion at this size, so the check is not vacuous."""
    ls = level_sizes_for(384, 512)
    dense = teacher_like_scores(sum(ls), 80, level_sizes=ls, rng=np.random.default_rng(seed))
    codec = SparseCodec()
    payload = codec.encode(dense, ls)
    decoded = codec.decode(payload)
    assert dense.size * 2 / payload_nbytes(payload) >= 50
    naive = _mean_filled(dense, ls, codec.threshold)
    n = ref.normalizer(dense)
    naive_errors = []
    for name, x in ref.students(dense, seed + 100).items():
        dense_result = ref.adl(dense, x, n)
        error, cosine = ref.errors(dense_result, decoded, x, n)
        assert abs(error) <= 0.005, (name, error)
        assert cosine >= 0.999, (name, cosine)
        naive_errors.append(abs(ref.errors(dense_result, naive, x, n)[0]))
    assert max(naive_errors) > 0.005


def _mean_filled(dense, level_sizes, threshold):
    out, start = dense.copy(), 0
    for size in level_sizes:
        block = dense[start:start + size]
        dropped = block < threshold
        fill = np.where(dropped, block, 0).sum(0) / np.maximum(dropped.sum(0), 1)
        out[start:start + size] = np.where(dropped, fill, block)
        start += size
    return out


def test_quality_module_matches_the_reference():
    rng = np.random.default_rng(5)
    q = rng.uniform(0, 1, (40, 3)) ** 3
    x = rng.normal(-2, 3, (40, 3))
    loss, grad = adl_and_grad(q, x, normalizer=3.5)
    ref_loss, ref_grad = ref.adl(q, x, 3.5)
    assert math.isclose(loss, ref_loss, rel_tol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-9, atol=1e-15)
    error, cosine = codec_error(q, q, x)
    assert error == 0 and math.isclose(cosine, 1.0)


@pytest.mark.parametrize("probs, sizes, message", [
    (np.full((4, 2), np.nan, np.float32), [4], "NaN/inf"),
    (np.full((4, 2), 1.5, np.float32), [4], "outside"),
    (np.zeros((4, 2), np.float32), [3], "level_sizes"),
    (np.zeros((4,), np.float32), [4], "probs"),
    (np.zeros((4, 2), np.int64), [4], "probs"),
])
def test_bad_inputs_raise_one_line_codec_errors(probs, sizes, message):
    with pytest.raises(CodecError, match=message) as info:
        SparseCodec().encode(probs, sizes)
    assert "\n" not in str(info.value)


def test_malformed_payloads_and_params_are_refused():
    codec = SparseCodec()
    payload = codec.encode(np.full((18, 2), 0.001, np.float32), [9, 9])
    for name, bad in [("values", payload["values"].astype(np.int32)),
                      ("fill", np.full_like(payload["fill"], np.nan)),
                      ("positions", np.zeros(3, np.int64)),          # not ascending
                      ("positions", np.array([40], np.int64))]:      # beyond the view
        with pytest.raises(CodecError):
            codec.decode(dict(payload, **{name: bad}))
    with pytest.raises(CodecError, match="fields"):
        codec.decode({k: v for k, v in payload.items() if k != "fill"})
    with pytest.raises(CodecError, match="unknown codec"):
        codec_from_params({"name": "zip"})
    with pytest.raises(CodecError, match="threshold"):
        SparseCodec(threshold=0)


@pytest.mark.parametrize("size, classes, seed", [("coco", 80, 0), ("embedded", 10, 1),
                                                 ("embedded", 10, 2)])
def test_one_pass_encoder_matches_the_numpy_reference(size, classes, seed):
    """shards.encode (numba, one pass) against the format-1 numpy encoder: the same kept
    entries and codes, the same block offsets, the same stand-ins to float32 summation order
    (compared decoded: where a level's loss does not depend on the contrast, e.g. one block
    offset in use, the two fits may pick different but equivalent parameters), and the
    normaliser against a float64 sum."""
    ls = level_sizes_for(384, 512) if size == "coco" else level_sizes_for(160, 224)
    dense = teacher_like_scores(sum(ls), classes, level_sizes=ls, rng=np.random.default_rng(seed))
    codec = SparseCodec()
    payload, normalizer = codec.encode_view(dense, ls, normalizer_power=1.8)
    fill, codes, positions, values = reference_payload(dense, ls, threshold=codec.threshold,
                                                       block=codec.block,
                                                       value_bits=codec.value_bits)
    np.testing.assert_array_equal(payload["positions"], positions)
    np.testing.assert_array_equal(payload["values"], values)
    assert np.mean(payload["block_offsets"] == codes) >= 0.999   # a rounding tie may differ
    assert np.abs(payload["block_offsets"].astype(int) - codes).max() <= 1
    reference = dict(payload, fill=fill.astype(np.float32), block_offsets=codes)
    np.testing.assert_allclose(codec.decode(payload), codec.decode(reference), rtol=1e-4)
    assert normalizer == pytest.approx(float(np.sum(dense.astype(np.float64) ** 1.8)), rel=1e-6)


def test_stored_form_round_trips_and_is_close_to_the_payload():
    ls = level_sizes_for(160, 224)
    dense = teacher_like_scores(sum(ls), 10, level_sizes=ls, rng=np.random.default_rng(7))
    codec = SparseCodec()
    payload = codec.encode(dense, ls)
    back = unpack_payload(pack_payload(payload))
    assert set(back) == set(payload)
    for name in payload:
        assert back[name].dtype == payload[name].dtype and np.array_equal(back[name], payload[name])
    raw = sum(np.asarray(a).nbytes for a in payload.values())
    assert payload_nbytes(payload) < raw / 2   # varint gaps instead of int64 positions, zlib


@pytest.mark.parametrize("positions", [[], [0], [5, 6, 7], [127, 128, 16511, 2**40, 2**40 + 1]])
def test_position_gaps_round_trip(positions):
    positions = np.array(positions, np.int64)
    gaps = _varint_gaps(positions)
    assert len(gaps) >= len(positions)
    np.testing.assert_array_equal(_positions_from_gaps(gaps, len(positions)), positions)
    assert _positions_from_gaps(gaps, len(positions) + 1) is None      # too few gaps
    if len(positions):
        assert _positions_from_gaps(gaps[:-1], len(positions)) is None  # cut short


def test_damaged_stored_payloads_are_one_line_codec_errors():
    codec = SparseCodec()
    data = pack_payload(codec.encode(np.full((18, 2), 0.5, np.float32), [9, 9]))
    import zlib
    raw = zlib.decompress(data)
    for bad, message in [(b"not zlib", "zlib"), (data[:-3], "zlib"),
                         (zlib.compress(raw[:-1]), "truncated"),
                         (zlib.compress(raw + b"x"), "after the values"),
                         (zlib.compress(raw[:8]), "header")]:
        with pytest.raises(CodecError, match=message) as info:
            unpack_payload(bad)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("classes, seed", [(80, 3), (10, 4)])
def test_torch_encoder_matches_the_numba_one(classes, seed):
    """The device path (shards.encode_torch, here on CPU tensors) gives the payload and
    normaliser of the numba encoder."""
    import torch

    from shards.codec import _value_grid
    from shards.encode_torch import encode_view_torch

    ls = level_sizes_for(384, 512) if classes == 80 else level_sizes_for(160, 224)
    dense = teacher_like_scores(sum(ls), classes, level_sizes=ls, rng=np.random.default_rng(seed))
    codec = SparseCodec()
    payload, normalizer = codec.encode_view(dense, ls)
    low, step = _value_grid(codec.threshold)
    fill, codes, positions, values, n_torch = encode_view_torch(
        torch.from_numpy(dense), np.array(ls), threshold=codec.threshold, block=codec.block,
        value_low=low, value_step=step, value_max_code=VALUE_LEVELS - 1, normalizer_power=1.8)
    np.testing.assert_array_equal(positions, payload["positions"])
    np.testing.assert_array_equal(values, payload["values"])
    assert np.mean(codes == payload["block_offsets"]) >= 0.999
    other = dict(payload, fill=fill.astype(np.float32), block_offsets=codes)
    np.testing.assert_allclose(codec.decode(other), codec.decode(payload), rtol=1e-4)
    assert n_torch == pytest.approx(normalizer, rel=1e-6)
