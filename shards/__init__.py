"""Teacher-output shards for SAD: sparse codec, webdataset writer/reader, manifest, checks.

Knows nothing about models: it stores dense per-view score arrays (compressed), anchors per
pyramid level and opaque JSON metadata. Must not import ``sadpipe``, nor of ``cuda_ops`` more
than ``cuda_ops.fastmath`` (the encoder's float32 maths) and ``cuda_ops.constants`` (the ADL's
defaults).
"""
from shards.codec import SparseCodec, codec_from_params, kept_fraction_per_level, payload_nbytes
from shards.errors import (
                           ChecksumError,
                           CodecError,
                           CorruptShardError,
                           ManifestError,
                           ShardError,
                           ShardMismatchError,
)
from shards.manifest import check_compatible, merge_manifests, read_manifest
from shards.reader import decode_view, shard_pipeline
from shards.synthetic import teacher_like_scores
from shards.verify import VerifyReport, verify_shards
from shards.writer import ShardPlan, ShardWriter

__all__ = [
    "SparseCodec", "codec_from_params", "kept_fraction_per_level", "payload_nbytes",
    "ShardError", "CodecError", "ShardMismatchError", "ManifestError", "ChecksumError",
    "CorruptShardError", "ShardWriter", "ShardPlan", "merge_manifests", "read_manifest",
    "check_compatible", "shard_pipeline", "decode_view", "verify_shards", "VerifyReport",
    "teacher_like_scores",
]
