"""Read shards for training: a webdataset pipeline that yields checked, lazily decoded samples.

::

    manifest = read_manifest(shard_dir)
    check_compatible(manifest, {"anchors": ..., "preprocessing": ...})   # refuse mismatches
    dataset = shard_pipeline(shard_dir, manifest=manifest, epoch=epoch, seed=seed,
                             start=positions)       # an IterableDataset for torch's DataLoader
    for sample in dataset:
        scores = decode_view(sample, "hflip")       # (HWA, C) float32, only the view you use

Order: the shard list is permuted by (seed, epoch), then split over ranks (``nodesplitter``,
default ``wds.split_by_node``) and DataLoader workers (``workersplitter``, default
``wds.split_by_worker``); each shard's samples are permuted by (seed, epoch, shard name). So
(seed, epoch, rank, world size, number of workers) fix every worker's stream, and each sample
carries ``position = {"worker": w, "index": i}``: its index in worker w's stream. To resume an
epoch, pass ``start = {w: last consumed index of worker w + 1}``: whole shards before that
point are skipped without being read.
"""
import functools
import json

import numpy as np
import webdataset as wds
from webdataset.tariterators import tarfile_samples
from webdataset.utils import pytorch_worker_info

from shards.codec import codec_from_params, unpack_payload
from shards.errors import CodecError, CorruptShardError, ShardError
from shards.manifest import check_compatible, join_url, read_manifest
from shards.sample import parse_sample

__all__ = ["shard_pipeline", "decode_view", "read_manifest", "check_compatible", "read_shard"]


class EpochShardList(wds.pipeline.IterableDataset):
    """Yields dict(url, name, count) for every shard, permuted by (seed, epoch)."""

    def __init__(self, shards, *, seed, epoch, shuffle):
        super().__init__()
        self.shards, self.seed, self.epoch, self.shuffle = shards, seed, epoch, shuffle

    def __iter__(self):
        order = np.arange(len(self.shards))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(order)
        for i in order:
            yield dict(self.shards[i])


def shard_pipeline(source, *, manifest=None, epoch=0, seed=0, shuffle=True, start=None,
                   nodesplitter=wds.split_by_node, workersplitter=wds.split_by_worker):
    """A ``webdataset.DataPipeline`` over the shards of ``source`` (a directory or URL prefix).

    Args:
        manifest: the result of ``read_manifest(source)`` (read here when None).
        epoch, seed: fix the order (see the module docstring).
        shuffle: permute shards and samples; False keeps the manifest order.
        start: resume point, {worker id: samples of that worker's stream to skip} (an int
            applies to every worker).
        nodesplitter, workersplitter: webdataset splitters (None to disable).

    Yields:
        {"key", "image_bytes", "image_ext", "target", "views": {name: {"recipe",
        "normalizer", "payload"}}, "shard", "codec", "position"}; decode views with
        :func:`decode_view`.
    """
    manifest = read_manifest(source) if manifest is None else manifest
    shards = [{"url": join_url(source, s["name"]), "name": s["name"], "count": s["count"]}
              for s in manifest["shards"]]
    codec_from_params(manifest["codec"])  # fail early on an unknown codec
    return wds.DataPipeline(
        EpochShardList(shards, seed=seed, epoch=epoch, shuffle=shuffle),
        nodesplitter,
        workersplitter,
        functools.partial(_samples, seed=seed, epoch=epoch, shuffle=shuffle, start=start,
                          codec=manifest["codec"]),
    )


def _samples(shard_stream, *, seed, epoch, shuffle, start, codec):
    """Pipeline stage: shard dicts -> checked samples, permuted within each shard."""
    worker = pytorch_worker_info()[2]
    skip = start.get(worker, 0) if isinstance(start, dict) else int(start or 0)
    index = 0  # position of the shard's first sample in this worker's stream
    for shard in shard_stream:
        if skip >= shard["count"]:  # resume: skip whole shards unread
            skip -= shard["count"]
            index += shard["count"]
            continue
        raws = read_shard(shard["url"], shard["name"], shard["count"])
        if shuffle:
            rng = np.random.default_rng([seed, epoch, *shard["name"].encode()])
            raws = [raws[i] for i in rng.permutation(len(raws))]
        for i in range(skip, len(raws)):
            sample = parse_sample(raws[i], shard["name"])
            sample["codec"] = codec
            sample["position"] = {"worker": worker, "index": index + i}
            yield sample
        index += len(raws)
        skip = 0


def read_shard(url, name, count=None):
    """All raw samples of one shard (webdataset's tar reader); one-line CorruptShardError when
    the tar is truncated or damaged, or holds another number of samples than ``count``."""
    try:
        raws = list(tarfile_samples([{"url": url}]))
    except Exception as err:  # tarfile, gzip and stream errors all mean a damaged shard
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CorruptShardError(f"shard {name}: truncated or damaged tar ({reason})") from None
    if count is not None and len(raws) != count:
        raise CorruptShardError(f"shard {name}: holds {len(raws)} samples, the manifest says "
                                f"{count} (truncated?)")
    return raws


@functools.lru_cache(maxsize=8)
def _codec(params_json):
    return codec_from_params(json.loads(params_json))


def decode_view(sample, name, out=None):
    """Dense teacher scores of one view of a sample from :func:`shard_pipeline`:
    (HWA, C) float32 (``out``, when given, is filled and returned)."""
    where = f"shard {sample.get('shard')}, sample {sample.get('key')}"
    if name not in sample["views"]:
        raise ShardError(f"{where}: no view {name!r} (has {sorted(sample['views'])})")
    codec = _codec(json.dumps(sample["codec"], sort_keys=True))
    try:
        payload = unpack_payload(sample["views"][name]["payload"])
        return codec.decode(payload, out=out)
    except CodecError as err:
        if "NaN/inf" in str(err):
            raise CorruptShardError(f"{where}: teacher scores contain NaN/inf") from None
        raise CorruptShardError(f"{where}: {err}") from None
