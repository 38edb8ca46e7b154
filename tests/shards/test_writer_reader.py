"""Writer and reader: round trip, stock webdataset, integrity, resume, ranks, splitting."""
import io
import json
import tarfile

import numpy as np
import pytest
import webdataset as wds

from shards import (
    ChecksumError,
    CorruptShardError,
    ManifestError,
    ShardError,
    ShardMismatchError,
    check_compatible,
    decode_view,
    merge_manifests,
    read_manifest,
    shard_pipeline,
    verify_shards,
)
from shards.codec import unpack_payload

from .conftest import (
    CODEC,
    HEADER,
    LEVEL_SIZES,
    VIEWS,
    build,
    image_bytes,
    is_unreadable,
    make_keys,
    target_of,
    view_probs,
    write_rank,
)


def all_samples(directory, **kwargs):
    return list(shard_pipeline(directory, shuffle=False, **kwargs))


def test_round_trip_gives_back_every_stored_field(shard_dir):
    samples = all_samples(shard_dir)
    keys = [s["key"] for s in samples]
    assert keys == [k for k in make_keys(10) if not is_unreadable(k)]
    for sample in samples:
        key = sample["key"]
        assert sample["image_bytes"] == image_bytes(int(key[1:]))
        assert sample["image_ext"] == "png" and sample["target"] == target_of(key)
        assert set(sample["views"]) == set(VIEWS)
        for view in VIEWS:
            dense = view_probs(key, view)
            stored = sample["views"][view]
            assert stored["recipe"] == {"flip": view == "hflip", "scale": 1.5}
            # float32-accurate terms, float64 sum (shards.encode)
            assert stored["normalizer"] == pytest.approx(
                float(np.sum(dense.astype(np.float64) ** 1.8)), rel=1e-6)
            expected = CODEC.decode(CODEC.encode(dense, LEVEL_SIZES))
            np.testing.assert_array_equal(decode_view(sample, view), expected)


def test_manifest_describes_the_run(shard_dir):
    manifest = read_manifest(shard_dir)
    totals = manifest["totals"]
    assert manifest["header"] == HEADER and manifest["codec"] == CODEC.params
    assert (totals["samples"], totals["views"], totals["skipped"]) == (9, 18, 1)
    assert manifest["skipped"] == [{"key": "k0007", "reason": "cannot identify image file",
                                    "shard": "rank01-000000.tar"}]
    assert [s["name"] for s in manifest["shards"]] == [
        "rank00-000000.tar", "rank00-000001.tar", "rank01-000000.tar", "rank01-000001.tar"]
    assert sum(s["count"] for s in manifest["shards"]) == 9
    assert totals["dense_fp16_bytes_per_view"] == sum(LEVEL_SIZES) * 3 * 2
    assert len(totals["kept_fraction_per_level"]) == len(LEVEL_SIZES)
    assert manifest["command"] == "test build"
    report = verify_shards(shard_dir)
    assert report.ok and (report.shards, report.samples, report.views) == (4, 9, 18)
    np.testing.assert_allclose(report.kept_fraction_per_level, totals["kept_fraction_per_level"])


def test_stock_webdataset_reads_the_shards(shard_dir):
    urls = sorted(str(p) for p in shard_dir.glob("*.tar"))
    seen = []
    for sample in wds.WebDataset(urls, shardshuffle=False).decode():
        members = [k for k in sample if not k.startswith("__")]
        assert {m.rsplit(".", 1)[-1] for m in members} <= {"png", "jpg", "json", "npy"}
        assert sorted(members) == ["json", "png", "scores.npy", "sha256.json"]  # one per sample
        scores = sample["scores.npy"]
        assert isinstance(scores, np.ndarray) and scores.dtype == np.uint8
        start, length = sample["json"]["views"][1]["payload"]  # any view, from its bytes alone
        dense = view_probs(sample["__key__"], sample["json"]["views"][1]["name"])
        np.testing.assert_array_equal(
            CODEC.decode(unpack_payload(scores[start:start + length].tobytes())),
            CODEC.decode(CODEC.encode(dense, LEVEL_SIZES)))
        assert sample["json"]["key"] == sample["__key__"]
        seen.append(sample["__key__"])
    assert len(seen) == 9
    for url in urls:
        with tarfile.open(url) as tar:
            for info in tar.getmembers():
                assert info.mtime == 0 and info.uid == 0 and info.isreg()
                assert info.name.rsplit(".", 1)[-1] in {"png", "jpg", "json", "npy"}


def _member_offset(path, suffix):
    """(sample key, byte offset) of the first member ending with ``suffix`` in a tar."""
    with tarfile.open(path) as tar:
        info = next(i for i in tar.getmembers() if i.name.endswith(suffix))
        return info.name.split(".")[0], info.offset_data


@pytest.mark.parametrize("suffix", ["scores.npy", ".json", ".png"])
def test_a_flipped_byte_is_a_checksum_mismatch(shard_dir, suffix):
    path = shard_dir / "rank00-000001.tar"
    key, offset = _member_offset(path, suffix)
    data = bytearray(path.read_bytes())
    data[offset + 5] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError) as info:
        all_samples(shard_dir)
    assert str(info.value) == f"shard rank00-000001.tar, sample {key}: checksum mismatch"
    report = verify_shards(shard_dir)
    assert not report.ok and "rank00-000001.tar" in report.problems[0]


@pytest.mark.parametrize("keep", [0.5, "boundary"])
def test_a_truncated_tar_is_a_one_line_shard_error(shard_dir, keep):
    path = shard_dir / "rank01-000000.tar"
    data = path.read_bytes()
    if keep == "boundary":  # cut at a member boundary: the tar still parses, samples are lost
        _, offset = _member_offset(path, "scores.npy")
        cut = offset - 512
    else:
        cut = int(len(data) * keep) + 100
    path.write_bytes(data[:cut])
    with pytest.raises(CorruptShardError) as info:
        all_samples(shard_dir)
    assert "shard rank01-000000.tar" in str(info.value) and "\n" not in str(info.value)


def test_a_hand_edited_manifest_is_refused(shard_dir):
    path = shard_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["shards"][0]["count"] += 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="edited by hand"):
        read_manifest(shard_dir)
    for old in (1, 99):  # format 1: the per-array members of earlier releases
        manifest["format_version"] = old
        path.write_text(json.dumps(manifest))
        with pytest.raises(ManifestError, match=f"format version {old}, this reader reads 2 "
                                                r"\(run sadpipe cache-logits again"):
            read_manifest(shard_dir)
    with pytest.raises(ManifestError, match="missing"):
        read_manifest(shard_dir / "nowhere")


def test_non_finite_teacher_scores_are_reported(tmp_path, monkeypatch):
    encode_view = type(CODEC).encode_view

    def poisoned(self, probs, level_sizes, **kwargs):
        payload, normalizer = encode_view(self, probs, level_sizes, **kwargs)
        payload["fill"][0, 0, 0] = np.nan
        return payload, normalizer

    monkeypatch.setattr(type(CODEC), "encode_view", poisoned)  # a broken writer: checksums are
    monkeypatch.setattr("shards.writer.kept_fraction_per_level",  # valid, scores are not
                        lambda payload: [0.0] * len(LEVEL_SIZES))
    build(tmp_path, make_keys(2))
    monkeypatch.undo()
    sample = all_samples(tmp_path)[0]
    with pytest.raises(CorruptShardError, match="sample k0000: teacher scores contain NaN/inf"):
        decode_view(sample, "orig")
    assert "NaN/inf" in verify_shards(tmp_path).problems[0]


def test_other_settings_are_refused_unless_overwrite(tmp_path):
    build(tmp_path, make_keys(5))
    other = dict(HEADER, teacher={"sha256": "b" * 64, "arch": "retinanet_r50"})
    with pytest.raises(ShardMismatchError) as info:
        write_rank(tmp_path, make_keys(5), header=other)
    message = str(info.value)
    assert "header.teacher.sha256" in message and "a" * 20 in message and "b" * 20 in message
    assert read_manifest(tmp_path)["header"] == HEADER  # nothing was touched
    build(tmp_path, make_keys(4), header=other, overwrite=True)
    manifest = read_manifest(tmp_path)
    assert manifest["header"] == other and manifest["totals"]["samples"] == 4
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == [
        "rank00-000000.tar", "rank00-000001.tar"]
    with pytest.raises(ShardMismatchError, match="key list"):
        write_rank(tmp_path, make_keys(6), header=other)


def test_killed_run_resumes_to_identical_bytes(tmp_path):
    keys = make_keys(11)
    build(tmp_path / "straight", keys)
    resumed = tmp_path / "resumed"
    write_rank(resumed, keys, stop_after=2)  # "killed" after two finished shards ...
    (resumed / ".rank00-000002.tar.partial").write_bytes(b"half a shard")  # ... mid-shard
    assert not (resumed / "manifest.json").exists()
    build(resumed, keys)
    assert not list(resumed.glob(".*partial"))
    for path in sorted((tmp_path / "straight").glob("*.tar")) + [
            tmp_path / "straight" / "manifest.json"]:
        assert (resumed / path.name).read_bytes() == path.read_bytes(), path.name


def test_two_ranks_merge_to_the_single_process_union(tmp_path):
    keys = make_keys(13)
    single = build(tmp_path / "one", keys, world_size=1)
    double = build(tmp_path / "two", keys, world_size=2)

    def members(directory):
        out = {}
        for url in sorted(directory.glob("*.tar")):
            with tarfile.open(url) as tar:
                for info in tar.getmembers():
                    out[info.name] = tar.extractfile(info).read()
        return out

    assert members(tmp_path / "one") == members(tmp_path / "two")
    for field in ("samples", "views", "skipped", "payload_bytes", "kept_fraction_per_level"):
        assert single["totals"][field] == pytest.approx(double["totals"][field]), field
    assert [s["key"] for s in single["skipped"]] == [s["key"] for s in double["skipped"]]


def test_merge_refuses_an_unfinished_rank(tmp_path):
    write_rank(tmp_path, make_keys(4), rank=0)
    write_rank(tmp_path, make_keys(8)[4:], rank=1, stop_after=1)
    with pytest.raises(ManifestError, match="rank 1"):
        merge_manifests(tmp_path, 2, command="x")


def test_keys_must_be_written_in_plan_order(tmp_path):
    from shards import ShardWriter
    writer = ShardWriter(tmp_path, header=HEADER, codec=CODEC, shard_size=2)
    plan = writer.plan(["a1", "a2"])[0]
    with pytest.raises(ShardError, match="expected key 'a1'"):
        with writer.open_shard(plan) as shard:
            shard.skip("a2", "x")
    assert not list(tmp_path.glob("*.tar")) and not list(tmp_path.glob(".*partial"))
    with pytest.raises(ShardError, match="duplicate key"):
        writer.plan(["a1", "a1"])
    with pytest.raises(ShardError, match="keys must be"):
        writer.plan(["a.1"])


@pytest.mark.parametrize("world_size, num_workers", [(2, 1), (1, 2), (2, 2)])
def test_node_and_worker_splits_have_no_duplicates_and_no_gaps(shard_dir, monkeypatch,
                                                              world_size, num_workers):
    seen = []
    for rank in range(world_size):
        for worker in range(num_workers):
            monkeypatch.setenv("RANK", str(rank))
            monkeypatch.setenv("WORLD_SIZE", str(world_size))
            monkeypatch.setenv("WORKER", str(worker))
            monkeypatch.setenv("NUM_WORKERS", str(num_workers))
            seen += [s["key"] for s in shard_pipeline(shard_dir, epoch=3, seed=1)]
    assert sorted(seen) == sorted(k for k in make_keys(10) if not is_unreadable(k))


def test_dataloader_workers_split_the_stream(shard_dir):
    import torch

    loader = torch.utils.data.DataLoader(shard_pipeline(shard_dir, epoch=0), num_workers=2,
                                         batch_size=None, collate_fn=lambda s: s["key"])
    keys = list(loader)
    assert sorted(keys) == sorted(k for k in make_keys(10) if not is_unreadable(k))


def test_epoch_and_position_reproduce_the_stream(shard_dir):
    stream = [(s["key"], s["position"]["index"]) for s in shard_pipeline(shard_dir, epoch=2,
                                                                          seed=7)]
    assert [i for _, i in stream] == list(range(9))
    assert stream == [(s["key"], s["position"]["index"])
                      for s in shard_pipeline(shard_dir, epoch=2, seed=7)]
    other_epoch = [s["key"] for s in shard_pipeline(shard_dir, epoch=3, seed=7)]
    assert other_epoch != [k for k, _ in stream] and sorted(other_epoch) == sorted(
        k for k, _ in stream)
    for start in (1, 2, 4, 8, 9):  # inside a shard, at a shard boundary, at the end
        resumed = [(s["key"], s["position"]["index"])
                   for s in shard_pipeline(shard_dir, epoch=2, seed=7, start={0: start})]
        assert resumed == stream[start:]


def test_check_compatible_names_the_mismatching_field(shard_dir):
    manifest = read_manifest(shard_dir)
    check_compatible(manifest, {"anchor_layout": HEADER["anchor_layout"], "views": list(VIEWS)})
    with pytest.raises(ShardMismatchError) as info:
        check_compatible(manifest, {"preprocessing": {"min_size": 64, "max_size": 128}})
    assert str(info.value) == "preprocessing.max_size: shards have 96, training expects 128"
    with pytest.raises(ShardMismatchError, match="teacher.arch: shards have"):
        check_compatible(manifest, {"teacher": {"arch": "retinanet_r101"}})
    with pytest.raises(ShardMismatchError, match=r"anchor_layout.strides: shards have \(missing\)"):
        check_compatible(manifest, {"anchor_layout": {"strides": [8, 16]}})


def test_only_npy_json_and_images_are_ever_unpacked(shard_dir):
    """Nothing in a sample is unpickled: .npy members load with allow_pickle=False."""
    path = shard_dir / "rank00-000000.tar"
    with tarfile.open(path) as tar:
        info = next(i for i in tar.getmembers() if i.name.endswith(".npy"))
        data = tar.extractfile(info).read()
    with pytest.raises(ValueError):
        np.load(io.BytesIO(_object_npy()), allow_pickle=False)
    assert np.load(io.BytesIO(data), allow_pickle=False).dtype != object


def _object_npy():
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return buf.getvalue()


KILLED_WRITER = """
import sys, time
from shards.writer import ShardSession
from tests.shards.conftest import make_keys, write_rank

out, marker = sys.argv[1], sys.argv[2]
original = ShardSession.write
def slow_write(self, key, **kwargs):
    original(self, key, **kwargs)
    if self.plan.index >= 2:  # two shards are final: announce, then crawl until killed
        open(marker, "w").close()
        time.sleep(0.2)
ShardSession.write = slow_write
write_rank(out, make_keys(11))
"""


def test_sigkilled_run_restarts_to_identical_bytes(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    keys = make_keys(11)
    build(tmp_path / "straight", keys)
    out, marker = tmp_path / "killed", tmp_path / "marker"
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(out), str(marker)],
                            cwd=repo, env=dict(os.environ, PYTHONPATH=str(repo)))
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert marker.exists(), "the writer never reached its third shard"
    assert list(out.glob(".rank00-000002.tar.partial"))  # killed mid-shard
    build(out, keys)
    for path in sorted((tmp_path / "straight").glob("*.tar")) + [
            tmp_path / "straight" / "manifest.json"]:
        assert (out / path.name).read_bytes() == path.read_bytes(), path.name


def test_a_url_prefix_works_like_a_directory(shard_dir):
    url = f"file://{shard_dir}"
    assert read_manifest(url) == read_manifest(shard_dir)
    assert [s["key"] for s in all_samples(url)] == [s["key"] for s in all_samples(shard_dir)]
    assert verify_shards(url).ok
