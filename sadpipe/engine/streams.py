"""Batch streams for training: a labeled / pseudo-labeled COCO set, or teacher shards.

Every stream is deterministic given (seed, number of batches already drawn), so a resumed
run continues each stream exactly where it stopped. A stream yields batch dicts:
"images" (N, 3, H, W), "targets" [{"boxes", "labels", "crowd_boxes"}], "recipes",
"image_ids", "skipped", and for shard streams also "teacher_probs" (N, HWA, C),
"teacher_mask" (N, HWA) and "normalizer" (Σ q^θ of the batch's views, exact from the cache).
"""
from __future__ import annotations

import functools

import torch

from sadpipe.data.categories import same_ids
from sadpipe.data.coco import CocoDataset
from sadpipe.data.loader import BatchSchedule, TrainDataset, collate
from sadpipe.engine.distributed import DistInfo
from sadpipe.errors import UserError


def batches_drawn(pattern: list[str], name: str, iteration: int) -> int:
    """How many batches stream ``name`` gave in iterations [0, iteration) of ``pattern``."""
    full, rest = divmod(iteration, len(pattern))
    return full * pattern.count(name) + pattern[:rest].count(name)


def coco_stream(annotations, images, spec, cfg: dict, dist: DistInfo, *, start_batch: int,
                seed_offset: int = 0):
    """Infinite iterator of augmented batches from a COCO-format set."""
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
        collate_fn=functools.partial(collate, size_divisibility=spec.preprocessing.size_divisibility))
    return iter(loader)
