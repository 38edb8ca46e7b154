"""Check a whole shard directory: manifest, shard hashes, sample checksums, payloads."""
import hashlib
from dataclasses import dataclass, field

import numpy as np

from shards.codec import codec_from_params, kept_fraction_per_level, unpack_payload
from shards.errors import CodecError, CorruptShardError, ShardError
from shards.manifest import join_url, read_bytes, read_manifest
from shards.reader import decode_view, read_shard
from shards.sample import parse_sample


@dataclass
class VerifyReport:
    """What ``verify_shards`` found. ``problems`` holds one line per failing shard."""

    shards: int = 0
    samples: int = 0
    views: int = 0
    payload_bytes: int = 0
    kept_fraction_per_level: list = field(default_factory=list)
    problems: list = field(default_factory=list)

    @property
    def ok(self):
        return not self.problems


def verify_shards(source, *, decode=True):
    """Read every shard of ``source``: its sha256 and sample count against the manifest, every
    sample's checksum, every payload's structure (and, with ``decode``, a full decode with a
    finiteness check). Raises ManifestError for a bad manifest; other problems are reported."""
    manifest = read_manifest(source)
    codec_from_params(manifest["codec"])  # unknown codec -> CodecError
    report = VerifyReport()
    kept_sum, kept_count = [], []
    for entry in manifest["shards"]:
        report.shards += 1
        try:
            _verify_shard(source, entry, manifest["codec"], decode, report, kept_sum,
                          kept_count)
        except (ShardError, OSError) as err:
            report.problems.append(str(err) if isinstance(err, ShardError)
                                   else f"shard {entry['name']}: unreadable ({err})")
    report.kept_fraction_per_level = [s / c for s, c in zip(kept_sum, kept_count)]
    return report


def _verify_shard(source, entry, codec_params, decode, report, kept_sum, kept_count):
    url = join_url(source, entry["name"])
    data = read_bytes(url)
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise ShardError(f"shard {entry['name']}: sha256 differs from the manifest")
    for raw in read_shard(url, entry["name"], entry["count"]):
        sample = parse_sample(raw, entry["name"])
        sample["codec"] = codec_params
        report.samples += 1
        for name, view in sample["views"].items():
            report.views += 1
            report.payload_bytes += len(view["payload"])
            if decode:
                scores = decode_view(sample, name)
                if not np.isfinite(scores).all():
                    raise ShardError(f"shard {entry['name']}, sample {sample['key']}: teacher "
                                     f"scores contain NaN/inf")
            for level, fraction in enumerate(kept_fraction_per_level(_payload(sample, name))):
                if level == len(kept_sum):
                    kept_sum.append(0.0)
                    kept_count.append(0)
                kept_sum[level] += fraction
                kept_count[level] += 1


def _payload(sample, name):
    try:
        return unpack_payload(sample["views"][name]["payload"])
    except CodecError as err:
        raise CorruptShardError(f"shard {sample['shard']}, sample {sample['key']}: {err}") from None
