"""Splitting an inference stage's work across torchrun ranks, and merging what they wrote.

Each rank takes one contiguous block of the work list (:func:`split_for_rank`), writes its
own part file atomically next to the final output (:func:`part_path`), and rank 0 reads the
parts in rank order after a barrier (:func:`gather_json_parts`). Because the blocks are
contiguous and in rank order, concatenating the parts gives the single-process order, so the
merged output does not depend on the number of processes.
"""
from __future__ import annotations

import glob
import json
from collections.abc import Sequence
from pathlib import Path

from sadpipe.engine.distributed import DistInfo, barrier
from sadpipe.fileio import write_json

PART_FORMAT = "sadpipe-part"


def block_bounds(num_items: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, stop)`` of ``rank``'s block of ``num_items``.

    Blocks are contiguous, in rank order, cover every item exactly once, and differ in size
    by at most one: the first ``num_items % world_size`` ranks take one item more.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    if num_items < 0:
        raise ValueError(f"num_items must be non-negative, got {num_items}")
    base, extra = divmod(num_items, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def split_for_rank(items: Sequence, rank: int, world_size: int) -> list:
    """``rank``'s contiguous block of ``items`` (see :func:`block_bounds`)."""
    start, stop = block_bounds(len(items), rank, world_size)
    return list(items[start:stop])


def part_path(path, rank: int, world_size: int) -> Path:
    """Where ``rank`` writes its part of the output ``path``: a hidden file beside it,
    ``.<name>.part-00001-of-00002``."""
    path = Path(path)
    return path.with_name(f".{path.name}.part-{rank:05d}-of-{world_size:05d}")


def gather_json_parts(path, info: DistInfo, part) -> list | None:
    """Collect every rank's ``part`` (JSON-able) on rank 0, in rank order.

    Every rank must call this. Single-process runs write nothing and get ``[part]``. Under
    torchrun each rank writes its part atomically to :func:`part_path`, all ranks meet at a
    barrier, and rank 0 reads the parts back; other ranks get ``None``. Rank 0 removes the
    part files with :func:`remove_parts` once the merged output is written.
    """
    if not info.enabled:
        return [part]
    write_json(part_path(path, info.rank, info.world_size),
               {"format": PART_FORMAT, "rank": info.rank, "world_size": info.world_size,
                "part": part}, indent=None)
    barrier(info)
    if not info.is_main:
        return None
    return [_read_part(path, rank, info.world_size) for rank in range(info.world_size)]


def remove_parts(path) -> None:
    """Delete every part file of ``path``, also those an interrupted run with another
    number of ranks left behind."""
    path = Path(path)
    for part in path.parent.glob(f".{glob.escape(path.name)}.part-*-of-*"):
        part.unlink(missing_ok=True)


def _read_part(path, rank: int, world_size: int):
    file = part_path(path, rank, world_size)
    payload = json.loads(file.read_text(encoding="utf-8"))
    if (payload.get("format") != PART_FORMAT or payload.get("rank") != rank
            or payload.get("world_size") != world_size):
        raise RuntimeError(f"{file}: not the part of rank {rank} of {world_size}")
    return payload["part"]
