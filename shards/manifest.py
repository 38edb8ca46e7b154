"""The files of a shard directory besides the tars, and the manifest that describes them.

::

    OUT/run.json                   settings every shard in OUT was made with (the "run identity")
    OUT/rankRR-NNNNNN.tar          shard NNNNNN of rank RR
    OUT/progress/rankRR.json       rank RR's plan (key-list digest) and whether it finished
    OUT/progress/rankRR-NNNNNN.json  a finished shard: count, sha256, bytes, skipped images
    OUT/manifest.json              merged description (written last, by rank 0)

The manifest carries ``content_sha256``, the digest of its own canonical JSON without that
field, so a hand edit is detected.
"""
import hashlib
import json
import os
import re
from pathlib import Path

from shards.errors import ManifestError, ShardMismatchError

FORMAT_VERSION = 2  # 2: one packed scores member per sample (sparse-v2); 1 is refused
MANIFEST = "manifest.json"
RUN = "run.json"
PROGRESS = "progress"
SHARD_PATTERN = re.compile(r"^rank(\d{2,})-(\d{6})\.tar$")
DIGEST_FIELD = "content_sha256"
MISSING = "(missing)"


def shard_name(rank, index):
    return f"rank{rank:02d}-{index:06d}.tar"


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def json_digest(obj) -> str:
    return hashlib.sha256(canonical(obj)).hexdigest()


def normalized(obj):
    """obj as JSON would give it back (tuples -> lists, ...)."""
    return json.loads(canonical(obj))


def write_json_atomic(path, obj):
    """Write JSON to a temporary name next to ``path``, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, allow_nan=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_json(path, what=None):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ManifestError(f"{what or path}: missing") from None
    except (OSError, ValueError) as err:
        raise ManifestError(f"{what or path}: unreadable JSON ({err})") from None


def run_identity(*, header, codec_params, shard_size, normalizer_power):
    """Everything that must be equal for two runs to write interchangeable shards."""
    return normalized({"format_version": FORMAT_VERSION, "header": header,
                       "codec": codec_params, "shard_size": shard_size,
                       "normalizer_power": normalizer_power})


def first_difference(have, want, path=""):
    """First (dotted path, have, want) where two JSON values differ (keys in sorted order),
    or None."""
    if isinstance(have, dict) and isinstance(want, dict):
        for key in sorted(set(have) | set(want), key=str):
            diff = first_difference(have.get(key, MISSING), want.get(key, MISSING),
                                    f"{path}.{key}" if path else str(key))
            if diff:
                return diff
        return None
    if isinstance(have, list) and isinstance(want, list) and len(have) == len(want):
        for i, (a, b) in enumerate(zip(have, want)):
            diff = first_difference(a, b, f"{path}.{i}" if path else str(i))
            if diff:
                return diff
        return None
    return None if have == want else (path or "(root)", have, want)


def show(value, limit=80):
    text = value if value == MISSING else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_compatible(manifest, expected):
    """Refuse shards whose header differs from what training expects.

    expected: nested dict of header fields (e.g. {"anchors": {...}, "preprocessing":
    {"min_size": 600}}); every leaf is compared with the manifest's header at the same dotted
    path (lists are compared whole). Raises ShardMismatchError("<field>: shards have X,
    training expects Y") for the first difference, in ``expected``'s order."""
    header = manifest["header"]
    for path, want in _leaves(normalized(expected)):
        have = header
        for part in path.split("."):
            have = have.get(part, MISSING) if isinstance(have, dict) else MISSING
        if have != want:
            raise ShardMismatchError(f"{path}: shards have {show(have)}, "
                                     f"training expects {show(want)}")


def _leaves(obj, prefix=""):
    for key, value in obj.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            yield from _leaves(value, path)
        else:
            yield path, value


def merge_manifests(out_dir, world_size, *, command):
    """Merge the progress of ranks 0..world_size-1 into OUT/manifest.json (call on rank 0
    after every rank's ``ShardWriter.finish()``, e.g. after a barrier). Returns the manifest."""
    out_dir = Path(out_dir)
    identity = read_json(out_dir / RUN, f"{out_dir / RUN}")
    run_digest = json_digest(identity)
    shards, skipped = [], []
    for rank in range(world_size):
        for entry in _rank_shards(out_dir, rank, run_digest):
            shards.append(entry)
            skipped += [dict(s, shard=entry["name"]) for s in entry["skipped"]]
    manifest = {
        "format_version": FORMAT_VERSION,
        "header": identity["header"],
        "codec": identity["codec"],
        "shard_size": identity["shard_size"],
        "normalizer_power": identity["normalizer_power"],
        "world_size": world_size,
        "shards": [{k: e[k] for k in ("name", "count", "sha256", "bytes")} for e in shards],
        "totals": _totals(shards),
        "skipped": skipped,
        "command": command,
    }
    manifest[DIGEST_FIELD] = json_digest(manifest)
    write_json_atomic(out_dir / MANIFEST, manifest)
    return manifest


def _rank_shards(out_dir, rank, run_digest):
    where = out_dir / PROGRESS / f"rank{rank:02d}.json"
    plan = read_json(where, f"{where} (has rank {rank} run?)")
    if plan.get("run") != run_digest or not plan.get("finished"):
        raise ManifestError(f"{where}: rank {rank} has not finished this run")
    entries = []
    for index in range(plan["num_shards"]):
        name = shard_name(rank, index)
        entry = read_json(out_dir / PROGRESS / name.replace(".tar", ".json"))
        tar = out_dir / name
        if not tar.exists() or tar.stat().st_size != entry["bytes"]:
            raise ManifestError(f"{tar}: missing or not the size recorded when it was written")
        entries.append(entry)
    return entries


def _totals(shards):
    views = sum(e["views"] for e in shards)
    payload = sum(e["payload_bytes"] for e in shards)
    dense = sum(e["dense_fp16_bytes"] for e in shards)
    levels = max((len(e["kept_fraction_sum"]) for e in shards), default=0)
    kept = [sum(e["kept_fraction_sum"][i] for e in shards if i < len(e["kept_fraction_sum"]))
            for i in range(levels)]
    counted = [sum(e["kept_fraction_count"][i] for e in shards
                   if i < len(e["kept_fraction_count"])) for i in range(levels)]
    return {
        "shards": len(shards),
        "samples": sum(e["count"] for e in shards),
        "views": views,
        "skipped": sum(len(e["skipped"]) for e in shards),
        "shard_bytes": sum(e["bytes"] for e in shards),
        "payload_bytes": payload,
        "payload_bytes_per_view": payload / views if views else 0.0,
        "dense_fp16_bytes_per_view": dense / views if views else 0.0,
        "compression_vs_fp16": dense / payload if payload else 0.0,
        "kept_fraction_per_level": [k / c if c else 0.0 for k, c in zip(kept, counted)],
    }


def read_manifest(source):
    """Read and check SOURCE/manifest.json (SOURCE: a directory, or any URL prefix webdataset
    can open). Raises ManifestError (one line) when it is missing, of another format version,
    inconsistent, or edited by hand."""
    where = join_url(source, MANIFEST)
    try:
        manifest = json.loads(read_bytes(where))
    except FileNotFoundError:
        raise ManifestError(f"{where}: missing (not a shard directory, or the run is not "
                            f"finished)") from None
    except (OSError, ValueError) as err:
        raise ManifestError(f"{where}: unreadable ({err})") from None
    if not isinstance(manifest, dict):
        raise ManifestError(f"{where}: not a JSON object")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ManifestError(f"{where}: format version {manifest.get('format_version')!r}, "
                            f"this reader reads {FORMAT_VERSION} (run sadpipe cache-logits again "
                            f"to rewrite the shards)")
    body = {k: v for k, v in manifest.items() if k != DIGEST_FIELD}
    if manifest.get(DIGEST_FIELD) != json_digest(body):
        raise ManifestError(f"{where}: content does not match its {DIGEST_FIELD} "
                            f"(edited by hand?)")
    _check_shard_list(manifest, where)
    return manifest


def _check_shard_list(manifest, where):
    try:
        names = [s["name"] for s in manifest["shards"]]
        counts = [s["count"] for s in manifest["shards"]]
        ok = (all(SHARD_PATTERN.match(n) for n in names) and len(set(names)) == len(names)
              and all(isinstance(c, int) and c >= 0 for c in counts)
              and all(re.fullmatch(r"[0-9a-f]{64}", s["sha256"]) for s in manifest["shards"])
              and sum(counts) == manifest["totals"]["samples"]
              and isinstance(manifest["header"], dict) and isinstance(manifest["codec"], dict))
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise ManifestError(f"{where}: shard list is malformed or does not add up to the totals")


def join_url(source, name):
    """SOURCE/name for a local directory or a URL prefix."""
    source = os.fspath(source)
    return str(Path(source) / name) if is_local(source) else source.rstrip("/") + "/" + name


def is_local(url):
    """True for plain paths; False for URLs (``scheme://...``, ``pipe:...``)."""
    url = os.fspath(url)
    return not ("://" in url or ":" in url.split("/")[0])


def read_bytes(url):
    """Whole content of a local path or of any URL webdataset's gopen understands."""
    if is_local(url):
        return Path(url).read_bytes()
    import webdataset

    with webdataset.gopen(url, "rb") as stream:
        return stream.read()
