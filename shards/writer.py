"""Write teacher outputs as webdataset shards that survive a kill and scale out over ranks.

Usage (one process per rank; rank r gets its own, disjoint key list)::

    writer = ShardWriter(out_dir, header=header, codec=SparseCodec(), rank=rank)
    for plan in writer.plan(keys):                # shard i = keys[i*N:(i+1)*N]
        if plan.done:                             # finished by an earlier, killed run
            continue
        with writer.open_shard(plan) as shard:    # temp file, renamed when complete
            for key in plan.keys:
                shard.write(key, image_bytes=..., image_ext="jpg", target={...},
                            views=[dict(name="orig", recipe={...}, probs=probs,
                                        level_sizes=[...])])
                # or shard.skip(key, "unreadable image: ...")
    writer.finish()
    # rank 0, after all ranks finished (barrier):
    merge_manifests(out_dir, world_size, command="sadpipe cache-logits ...")

Tar members carry fixed metadata (mtime 0, uid/gid 0, mode 0644) and a fixed order, so the
bytes depend only on the inputs: a killed and resumed run ends byte-identical to an
uninterrupted one. Shards are only renamed to their final name after their progress entry
is on disk, so a final name always means a complete shard.
"""
import contextlib
import hashlib
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cuda_ops.constants import NORMALIZER_POWER
from shards.codec import kept_fraction_per_level, pack_payload
from shards.errors import ShardError, ShardMismatchError
from shards.manifest import (
    MANIFEST,
    PROGRESS,
    RUN,
    first_difference,
    json_digest,
    merge_manifests,
    read_json,
    run_identity,
    shard_name,
    show,
    write_json_atomic,
)
from shards.sample import build_members, check_key

__all__ = ["ShardWriter", "ShardPlan", "merge_manifests"]

TAR_MODE = 0o644


@dataclass(frozen=True)
class ShardPlan:
    """One shard of a rank: its name, keys, final path, and whether it is already written."""

    name: str
    index: int
    keys: tuple
    path: Path
    done: bool


class ShardWriter:
    """Writes rank ``rank``'s shards into ``out_dir``.

    Args:
        out_dir: shard directory (created if missing).
        header: opaque JSON dict describing how the teacher outputs were made (teacher
            sha256, architecture, classes, anchor layout, preprocessing, views, ...).
        codec: a codec object (``encode``, ``params``), e.g. ``SparseCodec()``.
        shard_size: images per shard.
        rank: this process's rank; it appears in the shard names.
        overwrite: replace shards that ``out_dir`` holds from a different header, codec or
            key list. Without it such shards are refused (ShardMismatchError). Shards of the
            same run are always resumed, never redone. Under torchrun pass the same value on
            every rank (rank 0 then also clears other ranks' old shards), or construct rank
            0's writer first and the others after a barrier.
        normalizer_power: θ of the stored normaliser Σ q^θ (dense scores, float64).
    """

    def __init__(self, out_dir, *, header, codec, shard_size=64, rank=0, overwrite=False,
                 normalizer_power=NORMALIZER_POWER):
        if not (isinstance(shard_size, int) and shard_size >= 1):
            raise ShardError(f"shard_size: must be a positive integer, got {shard_size!r}")
        if not (isinstance(rank, int) and rank >= 0):
            raise ShardError(f"rank: must be a non-negative integer, got {rank!r}")
        if not isinstance(header, dict):
            raise ShardError("header: must be a JSON object (dict)")
        self.out_dir = Path(out_dir)
        self.codec, self.shard_size, self.rank = codec, shard_size, rank
        self.overwrite, self.normalizer_power = overwrite, float(normalizer_power)
        try:
            self.identity = run_identity(header=header, codec_params=codec.params,
                                         shard_size=shard_size,
                                         normalizer_power=self.normalizer_power)
        except (TypeError, ValueError) as err:
            raise ShardError(f"header: not JSON-serialisable ({err})") from None
        self.run_digest = json_digest(self.identity)
        self._plans = None
        self._claim_directory()

    # -- directory ownership -------------------------------------------------------------
    def _claim_directory(self):
        """Check OUT/run.json against this run; replace or refuse shards of another run.

        run.json is the authority: once it describes this run, files of any other run are
        garbage. With ``overwrite`` rank 0 removes every rank's stale files (other ranks'
        files of this run and their temporary files are left alone), every rank its own."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        run_path = self.out_dir / RUN
        existing = read_json(run_path) if run_path.exists() else None
        if existing != self.identity and not self.overwrite:
            if existing is not None:
                field, have, want = first_difference(existing, self.identity)
                raise ShardMismatchError(
                    f"{run_path}: {field}: existing shards have {show(have)}, this run has "
                    f"{show(want)} (overwrite to replace them)")
            if any(self.out_dir.glob("rank*-*.tar")):
                raise ShardMismatchError(f"{run_path}: missing, but {self.out_dir} holds shards "
                                         f"(overwrite to replace them)")
        if existing != self.identity:
            if self.rank == 0:
                (self.out_dir / MANIFEST).unlink(missing_ok=True)
            write_json_atomic(run_path, self.identity)
        self._remove_stale("rank*" if self.overwrite and self.rank == 0 else self._prefix)
        for partial in self.out_dir.glob(f".{self._prefix}-*.partial"):
            partial.unlink(missing_ok=True)  # left by a killed run of this rank

    @property
    def _prefix(self):
        return f"rank{self.rank:02d}"

    def _remove_stale(self, prefix):
        """Remove progress files of other runs, then shards no progress entry of this run
        vouches for, among files whose names start with ``prefix`` (a glob)."""
        progress = self.out_dir / PROGRESS
        for path in progress.glob(f"{prefix}.json"):
            if _run_of(path) != self.run_digest:
                path.unlink(missing_ok=True)
        for path in progress.glob(f"{prefix}-*.json"):
            if _run_of(path) != self.run_digest:
                path.unlink(missing_ok=True)
        for tar in self.out_dir.glob(f"{prefix}-*.tar"):
            if not self._entry_path(tar.name).exists():
                tar.unlink(missing_ok=True)

    def _clear_rank(self):
        """Remove this rank's shards and progress (its key list changed)."""
        for path in list(self.out_dir.glob(f"{self._prefix}-*.tar")) + \
                list((self.out_dir / PROGRESS).glob(f"{self._prefix}*.json")):
            path.unlink(missing_ok=True)

    @property
    def _plan_path(self):
        return self.out_dir / PROGRESS / f"{self._prefix}.json"

    # -- planning ------------------------------------------------------------------------
    def plan(self, keys):
        """Split this rank's keys into shards: shard i holds keys[i*N:(i+1)*N]."""
        keys = [check_key(k) for k in keys]
        seen = set()
        for key in keys:
            if key in seen:
                raise ShardError(f"keys: duplicate key {key!r}")
            seen.add(key)
        state = {"run": self.run_digest, "keys_sha256": json_digest(keys), "num_keys": len(keys),
                 "num_shards": -(-len(keys) // self.shard_size), "finished": False}
        self._check_resumable(state)
        write_json_atomic(self._plan_path, state)
        n = self.shard_size
        self._plans = [self._make_plan(i, tuple(keys[i * n:(i + 1) * n]))
                       for i in range(state["num_shards"])]
        if self.rank == 0 and not all(p.done for p in self._plans):
            (self.out_dir / MANIFEST).unlink(missing_ok=True)
        return list(self._plans)

    def _check_resumable(self, state):
        if not self._plan_path.exists():
            return
        old = read_json(self._plan_path)
        if old.get("run") == state["run"] and old.get("keys_sha256") == state["keys_sha256"]:
            return
        if not self.overwrite:
            raise ShardMismatchError(
                f"{self._plan_path}: key list: existing shards have {old.get('num_keys')} keys "
                f"(sha256 {str(old.get('keys_sha256'))[:12]}), this run has "
                f"{state['num_keys']} (sha256 {state['keys_sha256'][:12]}) "
                f"(overwrite to replace them)")
        self._clear_rank()

    def _make_plan(self, index, keys):
        name = shard_name(self.rank, index)
        path = self.out_dir / name
        entry_path = self._entry_path(name)
        done = False
        if path.exists() and entry_path.exists():
            entry = read_json(entry_path)
            done = (entry.get("run") == self.run_digest
                    and entry.get("keys_sha256") == json_digest(list(keys))
                    and entry.get("bytes") == path.stat().st_size)
        return ShardPlan(name=name, index=index, keys=keys, path=path, done=done)

    def _entry_path(self, name):
        return self.out_dir / PROGRESS / name.replace(".tar", ".json")

    # -- writing -------------------------------------------------------------------------
    @contextlib.contextmanager
    def open_shard(self, plan):
        """Context manager yielding a :class:`ShardSession`; on success the shard is renamed to
        its final name, on an exception the temporary file is removed."""
        tmp = self.out_dir / f".{plan.name}.partial"
        try:
            with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
                session = ShardSession(self, plan, tar)
                yield session
            session.check_complete()
            entry = session.entry(tmp)
            write_json_atomic(self._entry_path(plan.name), entry)
            os.replace(tmp, plan.path)
        finally:
            tmp.unlink(missing_ok=True)

    def finish(self):
        """Mark this rank finished (all planned shards written). Returns its plan state."""
        if self._plans is None:
            raise ShardError(f"rank {self.rank}: finish() called before plan()")
        missing = [p.name for p in self._plans if not self._make_plan(p.index, p.keys).done]
        if missing:
            raise ShardError(f"rank {self.rank}: {len(missing)} shard(s) not written, first "
                             f"{missing[0]}")
        state = read_json(self._plan_path)
        state["finished"] = True
        write_json_atomic(self._plan_path, state)
        return state


def _run_of(path):
    """The run digest a progress file belongs to (None when unreadable)."""
    try:
        return read_json(path).get("run")
    except ValueError:
        return None


class ShardSession:
    """An open shard: ``write`` or ``skip`` each of the plan's keys, in order."""

    def __init__(self, writer, plan, tar):
        self.writer, self.plan, self.tar = writer, plan, tar
        self.position = 0
        self.skipped = []
        self.stats = {"count": 0, "views": 0, "payload_bytes": 0, "dense_fp16_bytes": 0,
                      "kept_fraction_sum": [], "kept_fraction_count": []}

    def write(self, key, *, image_bytes, image_ext, target, views):
        """Add one image. views: [dict(name, recipe, probs: (HWA, C), level_sizes)]; probs a
        numpy array, or a torch tensor on the GPU the teacher ran on (encoded there)."""
        self._advance(key)
        encoded = [self._encode(key, view) for view in views]
        members = build_members(key, image_bytes=image_bytes, image_ext=image_ext,
                                target=target, views=encoded)
        for suffix, data in members:
            info = tarfile.TarInfo(f"{key}.{suffix}")
            info.size, info.mtime, info.mode = len(data), 0, TAR_MODE
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self.tar.addfile(info, io.BytesIO(data))
        self.stats["count"] += 1

    def skip(self, key, reason):
        """Record that ``key`` was not written (e.g. an unreadable image) and why."""
        self._advance(key)
        self.skipped.append({"key": key, "reason": " ".join(str(reason).split())})

    def _advance(self, key):
        if self.position >= len(self.plan.keys) or key != self.plan.keys[self.position]:
            want = self.plan.keys[self.position] if self.position < len(self.plan.keys) else None
            raise ShardError(f"shard {self.plan.name}: expected key {want!r} next (write or "
                             f"skip the plan's keys in order), got {key!r}")
        self.position += 1

    def _encode(self, key, view):
        try:
            probs, level_sizes = view["probs"], view["level_sizes"]
            name, recipe = view["name"], view["recipe"]
        except (KeyError, TypeError):
            raise ShardError(f"sample {key}: each view needs name, recipe, probs, "
                             f"level_sizes") from None
        payload, normalizer = self.writer.codec.encode_view(  # probs: array, or GPU tensor
            probs, level_sizes, normalizer_power=self.writer.normalizer_power)
        packed = pack_payload(payload)
        self._count_view(payload, len(packed), int(np.prod(probs.shape)))
        return {"name": name, "recipe": recipe, "normalizer": normalizer, "payload": packed}

    def _count_view(self, payload, payload_bytes, entries):
        stats = self.stats
        stats["views"] += 1
        stats["payload_bytes"] += payload_bytes
        stats["dense_fp16_bytes"] += entries * 2
        for level, fraction in enumerate(kept_fraction_per_level(payload)):
            if level == len(stats["kept_fraction_sum"]):
                stats["kept_fraction_sum"].append(0.0)
                stats["kept_fraction_count"].append(0)
            stats["kept_fraction_sum"][level] += fraction
            stats["kept_fraction_count"][level] += 1

    def check_complete(self):
        if self.position != len(self.plan.keys):
            raise ShardError(f"shard {self.plan.name}: key {self.plan.keys[self.position]!r} "
                             f"was neither written nor skipped")

    def entry(self, tmp):
        """Progress entry of the finished shard (tmp: its complete temporary file)."""
        h = hashlib.sha256()
        with open(tmp, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return dict(self.stats, name=self.plan.name, rank=self.writer.rank,
                    index=self.plan.index, run=self.writer.run_digest,
                    keys_sha256=json_digest(list(self.plan.keys)), sha256=h.hexdigest(),
                    bytes=tmp.stat().st_size, skipped=self.skipped)
