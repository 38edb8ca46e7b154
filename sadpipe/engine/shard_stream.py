"""Training batches read from teacher shards: images, targets and teacher scores.

Each rank reads its own shards (``webdataset.split_by_node``), each DataLoader worker its
own part of those (``split_by_worker``); epochs are chained, so every worker's stream is
infinite and a pure function of (seed, epoch, rank, worker). The DataLoader hands out
worker batches round-robin, so after ``b`` batches worker ``w`` has produced
``len(range(w, b, W))`` of them: a resumed run skips exactly that many samples per worker.
The cached view a sample trains on (original or flipped) is drawn from (seed, epoch, sample
key), so it does not depend on how the shards are split over processes and workers.

For a CUDA device (``pin_memory``) batches come in pinned host memory. Decoded in the main
process (``data.num_workers = 0``), the teacher scores are placed straight into a pinned batch
buffer (:func:`place_views`); from loader workers, the DataLoader pins the batches they hand
over (page-locking memory inside a worker would need CUDA there).
"""
from __future__ import annotations

import io
import math
from dataclasses import replace
from itertools import count

import numpy as np
import torch
from PIL import Image

import shards
from cuda_ops.constants import FP32
from sadpipe.data.categories import as_dicts, class_index_of
from sadpipe.data.loader import target_of
from sadpipe.data.transforms import Preprocessing, make_recipe, make_view, pad_batch, transform_boxes
from sadpipe.engine.distributed import DistInfo
from sadpipe.errors import UserError
from sadpipe.modeling.anchors import AnchorLayout
from sadpipe.modeling.distill import view_anchor_mask

RECIPE_FIELDS = ("image_size", "resized_size", "padded_size", "flip")
ERROR = "error"  # key of the one-item "batch" that carries a bad shard's message


def read_checked_manifest(shard_dir) -> dict:
    try:
        return shards.read_manifest(shard_dir)
    except shards.ShardError as err:
        raise UserError(str(err)) from None


def manifest_categories(shard_dir) -> list[dict]:
    """The classes the teacher shards were made for (training takes them from here)."""
    return read_checked_manifest(shard_dir)["header"]["categories"]


def expected_header(spec, cfg: dict) -> dict:
    """The shard header fields that must equal the student's own settings."""
    prep = replace(spec.preprocessing, min_size=cfg["input"]["train_min_sizes"][0])
    views = ["orig", "hflip"] if cfg["input"]["flip"] else ["orig"]
    return {"categories": as_dicts(spec.categories),
            "anchor_layout": spec.anchor_layout.to_dict(),
            "preprocessing": prep.to_dict(), "views": views}


def check_shard_set(shard_dir, spec, cfg: dict, dist: DistInfo) -> dict:
    """Read the manifest and refuse shards that do not fit the student's settings or cannot
    feed every process and worker; returns the manifest. Training calls it before it
    writes anything."""
    manifest = read_checked_manifest(shard_dir)
    if len(cfg["input"]["train_min_sizes"]) != 1:
        raise UserError(f"input.train_min_sizes {cfg['input']['train_min_sizes']}: distilling from "
                        "shards needs the single scale the teacher was cached at")
    try:
        shards.check_compatible(manifest, expected_header(spec, cfg))
    except shards.ShardMismatchError as err:
        raise UserError(f"{shard_dir}: {err}") from None
    _check_defaulted_fields(shard_dir, manifest["header"], spec)
    check_teacher_precision(shard_dir, manifest["header"], cfg["distill"]["teacher_precision"])
    workers = cfg["data"]["num_workers"]
    num_shards = len(manifest["shards"])
    if num_shards < dist.world_size * max(workers, 1):
        raise UserError(f"{shard_dir}: {num_shards} shards cannot feed {dist.world_size} processes × "
                        f"{max(workers, 1)} workers; cache with a smaller --shard-size")
    return manifest


def _check_defaulted_fields(shard_dir, header: dict, spec) -> None:
    """Fields written only when not at their default (channel order, pixel range, anchor
    convention) are absent from ``expected_header`` for a default student: compare them here,
    a missing one meaning its default."""
    pairs = [(f"preprocessing.{key}", getattr(Preprocessing.from_dict(header["preprocessing"]), key),
              getattr(spec.preprocessing, key)) for key in ("channel_order", "pixel_range")]
    pairs.append(("anchor_layout.convention",
                  AnchorLayout.from_dict(header["anchor_layout"]).convention,
                  spec.anchor_layout.convention))
    for field, have, want in pairs:
        if have != want:
            raise UserError(f"{shard_dir}: {field}: shards have {have!r}, training expects {want!r}")


def check_teacher_precision(shard_dir, header: dict, accepted: str) -> None:
    """The precision the cache's teacher ran at (``cache-logits --precision``) must be the one
    the config accepts (``distill.teacher_precision``), like any other recipe field. Caches
    made before the header recorded it ran in fp32."""
    have = header["teacher"].get("precision", FP32)
    if have != accepted:
        raise UserError(f"{shard_dir}: teacher.precision: shards have {have!r}, training expects "
                        f"{accepted!r} (distill.teacher_precision; set it to {have!r} to train from "
                        "this cache)")


def shard_stream(shard_dir, spec, cfg: dict, dist: DistInfo, *, start_batch: int, seed_offset: int = 0,
                 pin_memory: bool = False):
    """Infinite iterator of training batches (see :mod:`sadpipe.engine.streams`)."""
    return _raising(iter(shard_loader(shard_dir, spec, cfg, dist, start_batch=start_batch,
                                      seed_offset=seed_offset, pin_memory=pin_memory)))


def shard_loader(shard_dir, spec, cfg: dict, dist: DistInfo, *, start_batch: int, seed_offset: int = 0,
                 pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """The DataLoader behind :func:`shard_stream` (pinned batches with ``pin_memory``)."""
    manifest = check_shard_set(shard_dir, spec, cfg, dist)
    workers = cfg["data"]["num_workers"]
    dataset = ShardBatches(shard_dir, manifest, spec, cfg, dist, start_batch=start_batch,
                           seed=cfg["train"]["seed"] + seed_offset, pin=pin_memory and workers == 0)
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers, pin_memory=pin_memory)


def _raising(batches):
    """Re-raise, as one line, an error a loader worker handed over as a batch (an exception
    raised inside a worker would reach the trainer with the worker's traceback)."""
    for batch in batches:
        if ERROR in batch:
            raise UserError(batch[ERROR])
        yield batch


class ShardBatches(torch.utils.data.IterableDataset):
    """Per-rank batches of ``images_per_batch / world_size`` samples from one shard set."""

    def __init__(self, shard_dir, manifest, spec, cfg, dist: DistInfo, *, start_batch: int, seed: int,
                 pin: bool = False):
        super().__init__()
        self.pin = pin   # teacher scores decoded into pinned buffers (main process, CUDA device)
        self.shard_dir, self.manifest, self.spec = str(shard_dir), manifest, spec
        self.per_rank = cfg["solver"]["images_per_batch"] // dist.world_size
        self.flip, self.min_size = cfg["input"]["flip"], cfg["input"]["train_min_sizes"][0]
        self.class_of = class_index_of(spec.category_ids)
        self.dist, self.start_batch, self.seed = dist, start_batch, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        skip = len(range(worker, self.start_batch, num_workers)) * self.per_rank
        batch = []
        try:
            for sample in self._samples(worker, num_workers, skip):
                batch.append(sample)
                if len(batch) == self.per_rank:
                    yield self._collate(batch)
                    batch = []
        except shards.ShardError as err:  # checksum, damaged tar, NaN scores: one line
            yield {ERROR: str(err)}
        except UserError as err:
            yield {ERROR: err.message}

    def _samples(self, worker: int, num_workers: int, skip: int):
        counts = [s["count"] for s in self.manifest["shards"]]
        for epoch in count():
            order = np.random.default_rng([self.seed, epoch]).permutation(len(counts))
            mine = order[self.dist.rank::self.dist.world_size][worker::num_workers]
            size = sum(counts[i] for i in mine)
            if skip >= size:
                skip -= size
                continue
            # webdataset's split_by_node / split_by_worker take order[rank::world][worker::W]
            pipeline = shards.shard_pipeline(self.shard_dir, manifest=self.manifest, epoch=epoch,
                                             seed=self.seed, start=skip)
            skip = 0
            for raw in pipeline:
                yield self._load(raw, epoch)

    def _load(self, raw: dict, epoch: int) -> dict:
        """One training view of a shard sample: pick a cached view, rebuild its pixels."""
        where = f"shard {raw['shard']}, sample {raw['key']}"
        names = ["orig", "hflip"] if self.flip else ["orig"]
        rng = np.random.default_rng([self.seed, epoch, *raw["key"].encode()])
        name = names[int(rng.integers(len(names)))]
        view = raw["views"][name]
        if not math.isfinite(view["normalizer"]):
            raise UserError(f"{where}: teacher normaliser of view {name} is {view['normalizer']}")
        image = np.asarray(Image.open(io.BytesIO(raw["image_bytes"])).convert("RGB"))
        recipe = view["recipe"]
        own = make_recipe(self.spec.preprocessing, image.shape[0], image.shape[1],
                          flip=name == "hflip", min_size=self.min_size)
        if any(own[k] != recipe[k] for k in RECIPE_FIELDS):
            raise UserError(f"{where}: cached view {name} was made as {_show(recipe)}, the student "
                            f"makes {_show(own)}")
        probs = torch.from_numpy(shards.decode_view(raw, name))
        target = raw["target"]
        boxes = np.asarray(target["boxes"], dtype=np.float32).reshape(-1, 4)
        # shards made before crowd regions were cached have none
        crowd = np.asarray(target.get("crowd_boxes", []), dtype=np.float32).reshape(-1, 4)
        return {"image": make_view(image, recipe, self.spec.preprocessing),
                "boxes": torch.from_numpy(transform_boxes(boxes, recipe)),
                "labels": torch.tensor([self.class_of[c] for c in target["category_ids"]],
                                       dtype=torch.int64),
                "crowd_boxes": torch.from_numpy(transform_boxes(crowd, recipe)),
                "image_id": target["image_id"], "recipe": recipe, "probs": probs,
                "normalizer": float(view["normalizer"])}

    def _collate(self, samples: list[dict]) -> dict:
        layout = self.spec.anchor_layout
        images = pad_batch([s["image"] for s in samples], self.spec.preprocessing.size_divisibility)
        probs, masks = place_views([s["probs"] for s in samples], [s["recipe"] for s in samples],
                                   layout, tuple(images.shape[-2:]), pin=self.pin)
        return {"images": images,
                "targets": [target_of(s) for s in samples],
                "image_ids": [s["image_id"] for s in samples],
                "recipes": [s["recipe"] for s in samples], "skipped": 0,
                "teacher_probs": probs, "teacher_mask": masks,
                "normalizer": sum(s["normalizer"] for s in samples)}


def place_views(views: list[torch.Tensor], recipes: list[dict], layout: AnchorLayout,
                batch_hw: tuple[int, int], *, pin: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Each view's decoded teacher scores (HWA_view, C), on its own padded grid, placed on the
    batch grid: probs (N, HWA, C), 0 off each view's grid, and masks (N, HWA) of the anchors on
    it (:func:`sadpipe.modeling.distill.to_batch_layout`, for a whole batch). ``pin``: the probs
    buffer is allocated in pinned memory, so the decoded scores go straight where an
    asynchronous copy to the GPU reads them."""
    masks = torch.stack([view_anchor_mask(layout, tuple(r["padded_size"]), batch_hw) for r in recipes])
    probs = torch.zeros(*masks.shape, views[0].shape[1], dtype=views[0].dtype, pin_memory=pin)
    for out, view, mask in zip(probs, views, masks):
        out[mask] = view
    return probs, masks


def _show(recipe: dict) -> str:
    return ", ".join(f"{k}={recipe[k]}" for k in RECIPE_FIELDS)
