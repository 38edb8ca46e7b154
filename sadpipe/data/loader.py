"""Training batches: a deterministic, resumable schedule of (image, augmentation seed) items.

The batch of iteration ``i`` is a pure function of (seed, i): epochs are seeded
permutations laid end to end and each item carries its own augmentation seed. Resuming at
iteration ``k`` therefore replays exactly the batches an uninterrupted run would have seen,
and under DDP rank r of W takes its slice of the same global batch.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from sadpipe.data.categories import class_index_of
from sadpipe.data.coco import CocoDataset, ImageError
from sadpipe.data.transforms import Preprocessing, make_recipe, make_view, pad_batch, transform_boxes

log = logging.getLogger(__name__)


@dataclass
class BatchSchedule:
    """Iterable of per-rank batches: lists of (dataset index, augmentation seed).

    Args:
        num_items: dataset size; batch_size: GLOBAL images per step.
        seed: run seed; start_iter: first iteration to produce (for resume).
        rank, world_size: this process's slice of each global batch.
    """

    num_items: int
    batch_size: int
    seed: int = 0
    start_iter: int = 0
    rank: int = 0
    world_size: int = 1

    def __iter__(self):
        per_rank = self.batch_size // self.world_size
        it = self.start_iter
        while True:
            positions = range(it * self.batch_size + self.rank * per_rank,
                              it * self.batch_size + (self.rank + 1) * per_rank)
            yield [self.item(p) for p in positions]
            it += 1

    def item(self, position: int) -> tuple[int, int]:
        epoch, offset = divmod(position, self.num_items)
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
        return int(perm[offset]), int(np.random.SeedSequence([self.seed, epoch, offset]).generate_state(1)[0])


class TrainDataset(torch.utils.data.Dataset):
    """One randomly scaled / flipped view per (index, seed) item.

    Returns dict: "image" (3, h, w) normalised, "boxes" (K, 4) xyxy view pixels, "labels" (K,)
    class indices, "crowd_boxes" (M, 4) xyxy view pixels, "image_id", "recipe"; or None for
    an unreadable image when not strict. Images without (non-crowd) boxes are left out.
    """

    def __init__(self, coco: CocoDataset, category_ids: list[int], prep: Preprocessing, *,
                 train_min_sizes: list[int], flip: bool = True, strict: bool = False):
        self.coco = coco
        self.records = [r for r in coco.records if r.trainable]
        self.class_of = class_index_of(category_ids)
        self.prep, self.train_min_sizes, self.flip, self.strict = prep, train_min_sizes, flip, strict

    def __len__(self):
        return len(self.records)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        record = self.records[index]
        try:
            image = np.asarray(self.coco.load_image(record))
        except ImageError as err:
            if self.strict:
                raise
            log.warning("skipping image: %s", err)
            return None
        rng = np.random.default_rng(seed)
        min_size = int(self.train_min_sizes[rng.integers(len(self.train_min_sizes))])
        flip = self.flip and bool(rng.random() < 0.5)
        recipe = make_recipe(self.prep, record.height, record.width, flip=flip, min_size=min_size)
        labels = [self.class_of[c] for c in record.category_ids.tolist()]
        return {"image": make_view(image, recipe, self.prep),
                "boxes": torch.from_numpy(transform_boxes(record.boxes, recipe)),
                "labels": torch.tensor(labels, dtype=torch.int64),
                "crowd_boxes": torch.from_numpy(transform_boxes(record.crowd_boxes, recipe)),
                "image_id": record.image_id, "recipe": recipe}


TARGET_KEYS = ("boxes", "labels", "crowd_boxes")


def target_of(sample: dict) -> dict:
    """The matching targets of one view: "boxes" (K, 4), "labels" (K,), "crowd_boxes" (M, 4)."""
    return {key: sample[key] for key in TARGET_KEYS}


def collate(samples: list, size_divisibility: int) -> dict:
    """Pad views into one (N, 3, H, W) batch; unreadable images (None) are dropped."""
    skipped = sum(s is None for s in samples)
    samples = [s for s in samples if s is not None]
    return {"images": pad_batch([s["image"] for s in samples], size_divisibility) if samples else None,
            "targets": [target_of(s) for s in samples],
            "image_ids": [s["image_id"] for s in samples],
            "recipes": [s["recipe"] for s in samples],
            "skipped": skipped}
