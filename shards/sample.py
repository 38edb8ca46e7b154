"""One image = one webdataset sample: member names, bytes, checksum, and parsing back.

Members of sample ``KEY`` (all lower-case suffixes; webdataset splits a member name at the
first dot into key and suffix)::

    KEY.jpg | KEY.png                    the image bytes, unchanged
    KEY.json                             {"key", "image": ext, "target", "views": [{"name",
                                          "recipe", "normalizer", "payload": [start, length]}]}
    KEY.scores.npy                       uint8 (numpy .npy, no pickle): the stored codec
                                          payloads of all views, back to back; a view's
                                          bytes are [start, start + length)
    KEY.sha256.json                      {"sha256": digest of all other members}

One member for all views keeps the container's cost (a 512-byte tar header, an .npy header
and the padding to 512 bytes) to one per image.

The digest is the sha256 of, for every other member in suffix order: the suffix, a NUL byte,
the length as 8 little-endian bytes, and the data.
"""
import hashlib
import io
import json
import re

import numpy as np

from shards.errors import ChecksumError, CorruptShardError, ShardError

KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # no dots, no slashes
NAME_PATTERN = re.compile(r"^[a-z0-9_-]{1,16}$")  # view and payload field names
IMAGE_EXTS = ("jpg", "png")
META = "json"
SCORES = "scores.npy"
CHECKSUM = "sha256.json"


def check_key(key):
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise ShardError(f"key {key!r}: keys must be 1-64 characters from A-Z a-z 0-9 _ -")
    return key


def check_name(what, name):
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ShardError(f"{what} {name!r}: names must be 1-16 characters from a-z 0-9 _ -")
    return name


def dumps_json(obj, where):
    """Canonical JSON bytes (sorted keys, no NaN), so equal inputs give equal bytes."""
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as err:
        raise ShardError(f"{where}: not JSON-serialisable ({err})") from None


def npy_bytes(arr):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(arr), version=(1, 0), allow_pickle=False)
    return buf.getvalue()


TAR_BLOCK = 512  # a tar member: one header block, its data rounded up to whole blocks


def scores_member_bytes(payload_sizes) -> int:
    """Bytes a sample's scores member takes in a shard for views whose stored payloads have
    these sizes: the tar header block, the npy header and the data, padded to tar blocks."""
    data = len(npy_bytes(np.zeros(int(sum(payload_sizes)), np.uint8)))
    return TAR_BLOCK + -(-data // TAR_BLOCK) * TAR_BLOCK


def digest(members):
    """sha256 hex of a sample's members (suffix -> bytes), the checksum member excluded."""
    h = hashlib.sha256()
    for suffix in sorted(s for s in members if s != CHECKSUM):
        data = members[suffix]
        h.update(suffix.encode() + b"\0" + len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def build_members(key, *, image_bytes, image_ext, target, views):
    """Members of one sample, in tar order: [(suffix, bytes)].

    views: [{"name", "recipe", "normalizer", "payload": bytes}] (payloads already encoded
    and packed)."""
    if image_ext not in IMAGE_EXTS:
        raise ShardError(f"sample {key}: image_ext must be one of {IMAGE_EXTS}, got {image_ext!r}")
    names = [check_name("view", v["name"]) for v in views]
    if len(set(names)) != len(names):
        raise ShardError(f"sample {key}: duplicate view names {names}")
    meta_views, start = [], 0
    for view in views:
        length = len(view["payload"])
        meta_views.append({"name": view["name"], "recipe": view["recipe"],
                           "normalizer": float(view["normalizer"]), "payload": [start, length]})
        start += length
    scores = np.frombuffer(b"".join(bytes(v["payload"]) for v in views), np.uint8)
    meta = {"key": key, "image": image_ext, "target": target, "views": meta_views}
    members = [(image_ext, bytes(image_bytes)), (META, dumps_json(meta, f"sample {key}")),
               (SCORES, npy_bytes(scores))]
    members.append((CHECKSUM, dumps_json({"sha256": digest(dict(members))}, f"sample {key}")))
    return members


def parse_sample(raw, shard):
    """A raw webdataset sample (``__key__`` plus suffix -> bytes) -> decoded sample dict.

    Verifies the checksum first. Returns {"key", "image_bytes", "image_ext", "target",
    "views": {name: {"recipe", "normalizer", "payload": bytes}}, "shard"}; a view's payload
    is its stored codec payload (``shards.codec.unpack_payload``)."""
    key = raw.get("__key__", "?")
    where = f"shard {shard}, sample {key}"
    members = {k: v for k, v in raw.items() if not k.startswith("__")}
    if CHECKSUM not in members or META not in members:
        raise CorruptShardError(f"{where}: incomplete sample (missing members; truncated shard?)")
    try:
        stored = json.loads(members[CHECKSUM])["sha256"]
    except (ValueError, KeyError, TypeError):
        raise ChecksumError(f"{where}: checksum mismatch") from None
    if stored != digest(members):
        raise ChecksumError(f"{where}: checksum mismatch")
    try:
        meta = json.loads(members[META])
        scores = _load_npy(members[SCORES]) if meta["views"] else np.empty(0, np.uint8)
        if scores.dtype != np.uint8 or scores.ndim != 1:
            raise ValueError(f"{SCORES} holds {scores.dtype} {scores.shape}, not uint8 bytes")
        views = {}
        for v in meta["views"]:
            start, length = (int(x) for x in v["payload"])
            if not 0 <= start <= start + length <= len(scores):
                raise ValueError(f"view {v['name']}: payload bytes outside {SCORES}")
            views[v["name"]] = {"recipe": v["recipe"], "normalizer": float(v["normalizer"]),
                                "payload": scores[start:start + length].tobytes()}
        ext = meta["image"]
        return {"key": meta["key"], "image_bytes": members[ext], "image_ext": ext,
                "target": meta["target"], "views": views, "shard": shard}
    except (ValueError, KeyError, TypeError) as err:
        raise CorruptShardError(f"{where}: malformed sample ({type(err).__name__}: {err})") \
            from None


def _load_npy(data):
    return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
