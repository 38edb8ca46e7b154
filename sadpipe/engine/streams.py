"""Batch streams for training: a labeled / pseudo-labeled COCO set, or teacher shards.

Every stream is deterministic given (seed, number of batches already drawn), so a resumed
run continues each stream exactly where it stopped. A stream yields batch dicts:
"images" (N, 3, H, W), "targets" [{"boxes", "labels", "crowd_boxes"}], "recipes",
"image_ids", "skipped", and for shard streams also "teacher_probs" (N, HWA, C),
"teacher_mask" (N, HWA) and "normalizer" (Σ q^θ of the batch's views, exact from the cache).

With ``pin_memory`` (training on a CUDA device) the loaders hand out batches in pinned host
memory, so that the trainer's ``.to(device, non_blocking=True)`` copies run asynchronously.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from sadpipe.data.categories import same_ids
from sadpipe.data.coco import CocoDataset
from sadpipe.data.loader import BatchSchedule, TrainDataset, collate
from sadpipe.engine.distributed import DistInfo
from sadpipe.errors import UserError

LABELED, PSEUDO = "labeled", "pseudo"   # the two batch sources of SAD training


@dataclass(frozen=True)
class CocoSource:
    """Batches read, augmented and padded from a COCO-format set (images + annotations)."""

    annotations: Path
    images: Path


@dataclass(frozen=True)
class ShardSource:
    """Batches read from teacher shards (``sadpipe cache-logits``): images, targets and the
    teacher's scores."""

    shard_dir: Path


def training_sources(data: dict, shard_dirs: dict, *, distill: bool) -> dict:
    """{source name: CocoSource | ShardSource} for the labeled and pseudo-labeled sets:
    the shard folders given (``shard_dirs``: {LABELED, PSEUDO: folder or None}), else the
    config's ``[data]`` files (the pseudo-labeled set only when distilling)."""
    if any(shard_dirs.values()):
        return {name: ShardSource(Path(d)) for name, d in shard_dirs.items() if d}
    sources = {LABELED: CocoSource(data["train_annotations"], data["train_images"])}
    if distill and data["pseudo_annotations"]:
        sources[PSEUDO] = CocoSource(data["pseudo_annotations"], data["pseudo_images"])
    return sources


def open_stream(name: str, source, spec, cfg: dict, dist: DistInfo, *, start_batch: int,
                pin_memory: bool = False):
    """The batch iterator of source ``name`` (its own seed offset), from batch ``start_batch``;
    batches in pinned memory with ``pin_memory`` (for a CUDA device)."""
    seed_offset = 0 if name == LABELED else 1
    if isinstance(source, ShardSource):
        from sadpipe.engine.shard_stream import shard_stream
        return shard_stream(source.shard_dir, spec, cfg, dist, start_batch=start_batch,
                            seed_offset=seed_offset, pin_memory=pin_memory)
    return coco_stream(source.annotations, source.images, spec, cfg, dist, start_batch=start_batch,
                       seed_offset=seed_offset, pin_memory=pin_memory)


def batches_drawn(pattern: list[str], name: str, iteration: int) -> int:
    """How many batches stream ``name`` gave in iterations [0, iteration) of ``pattern``."""
    full, rest = divmod(iteration, len(pattern))
    return full * pattern.count(name) + pattern[:rest].count(name)


def coco_stream(annotations, images, spec, cfg: dict, dist: DistInfo, *, start_batch: int,
                seed_offset: int = 0, pin_memory: bool = False):
    """Infinite iterator of augmented batches from a COCO-format set."""
    return iter(coco_loader(annotations, images, spec, cfg, dist, start_batch=start_batch,
                            seed_offset=seed_offset, pin_memory=pin_memory))


def coco_loader(annotations, images, spec, cfg: dict, dist: DistInfo, *, start_batch: int,
                seed_offset: int = 0, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """The DataLoader behind :func:`coco_stream`."""
    coco = CocoDataset(annotations, images)
    if not same_ids(coco.category_ids, spec.category_ids):
        raise UserError(f"{annotations}: categories (ids {coco.category_ids[:8]}) differ from the "
                        f"model's (ids {spec.category_ids[:8]})")
    dataset = TrainDataset(coco, spec.category_ids, spec.preprocessing,
                           train_min_sizes=cfg["input"]["train_min_sizes"], flip=cfg["input"]["flip"],
                           strict=cfg["data"]["strict_images"])
    if len(dataset) == 0:
        raise UserError(f"{annotations}: no image with boxes to train on")
    schedule = BatchSchedule(len(dataset), cfg["solver"]["images_per_batch"],
                             seed=cfg["train"]["seed"] + seed_offset, start_iter=start_batch,
                             rank=dist.rank, world_size=dist.world_size)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=schedule, num_workers=cfg["data"]["num_workers"],
        collate_fn=functools.partial(collate, size_divisibility=spec.preprocessing.size_divisibility),
        pin_memory=pin_memory)
    return loader
