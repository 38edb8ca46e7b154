"""Run the teacher on every view of every image, exactly as the student will see it, and
store the encoded scores in webdataset shards (the ``shards`` package).

Which images, in which order: the images training uses (those with boxes,
``ImageRecord.trainable``), in an order shuffled by ``shuffle_seed``, so that every shard — and
so every training batch read from one — mixes the set's images (ground-truth and
pseudo-labeled ones alike) as a batch of the COCO stream does. Work is split in fixed groups
of ``batch_size`` images of that list; the views of a group with the same padded size form
one teacher batch (each view on its own padded grid: ``sadpipe.engine.teacher``). Ranks take
contiguous blocks of groups, so the teacher computes the same batches whatever the number
of processes or the point a killed run resumes from, and the shards' bytes do not change.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

import shards
from cuda_ops.constants import FP32
from sadpipe.config import load_config
from sadpipe.data.categories import as_dicts, same_ids
from sadpipe.data.coco import CocoDataset, ImageError
from sadpipe.data.transforms import Preprocessing, make_recipe, preprocessing_from_config
from sadpipe.engine.distributed import DistInfo, barrier
from sadpipe.engine.sharding import split_for_rank
from sadpipe.engine.teacher import Teacher
from sadpipe.errors import UserError
from sadpipe.fileio import file_sha256

log = logging.getLogger(__name__)

VIEW_FLIPS = {"orig": False, "hflip": True}
FORMAT_OF_EXT = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png"}


@dataclass(frozen=True)
class CacheSettings:
    views: tuple[str, ...] = ("orig", "hflip")
    min_size: int | None = None      # None: the teacher's own test sizes
    max_size: int | None = None
    student_input: Preprocessing | None = None   # the student's normalisation (recorded,
    shard_size: int = 64                         # checked by training); None: the teacher's
    batch_size: int = 1
    shuffle_seed: int = 0                        # order of the images in the shards


def student_cache_settings(student_config=None, *, min_size: int | None = None,
                           max_size: int | None = None, **kwargs) -> CacheSettings:
    """Views sized and normalised as the student trains (its train config); explicit
    ``min_size``/``max_size`` win. Without a config: the teacher's test sizes and input."""
    if not student_config:
        return CacheSettings(min_size=min_size, max_size=max_size, **kwargs)
    cfg = load_config(student_config)
    if len(cfg["input"]["train_min_sizes"]) != 1:
        raise UserError(f"{student_config}: input.train_min_sizes must hold the one training "
                        "scale to cache")
    return CacheSettings(min_size=min_size or cfg["input"]["train_min_sizes"][0],
                         max_size=max_size or cfg["input"]["max_size"],
                         student_input=preprocessing_from_config(cfg), **kwargs)


def view_preprocessing(teacher: Teacher, s: CacheSettings) -> Preprocessing:
    t = teacher.spec.preprocessing
    return replace(s.student_input or t, min_size=s.min_size or t.min_size,
                   max_size=s.max_size or t.max_size,
                   size_divisibility=(s.student_input.size_divisibility if s.student_input
                                      else teacher.spec.anchor_layout.size_divisibility))


def cache_header(teacher: Teacher, teacher_path, prep: Preprocessing, s: CacheSettings,
                 annotations) -> dict:
    """What the shards were made from; training checks its own settings against this (the
    teacher's precision against ``distill.teacher_precision``)."""
    spec = teacher.spec
    return {"teacher": {"sha256": file_sha256(teacher_path), "arch": spec.arch,
                        "precision": teacher.precision},
            "categories": as_dicts(spec.categories),
            "anchor_layout": spec.anchor_layout.to_dict(),
            "preprocessing": prep.to_dict(),
            "views": list(s.views),
            "annotations_sha256": file_sha256(annotations),
            "images": {"order": "shuffled", "shuffle_seed": s.shuffle_seed,
                       "without_boxes": "left out (not trained on)"}}


def sample_key(image_id: int) -> str:
    return f"img{image_id:012d}"


def cache_logits(teacher_path, annotations, images_dir, out_dir, *, settings: CacheSettings,
                 dist: DistInfo, device: str = "cpu", precision: str = FP32, overwrite: bool = False,
                 command: str = "", progress=None) -> dict | None:
    """Write this rank's shards; rank 0 merges the manifest. Returns the manifest (rank 0).
    ``precision``: the teacher network's (:mod:`sadpipe.engine.precision`), in the header."""
    for view in settings.views:
        if view not in VIEW_FLIPS:
            raise UserError(f"--views: unknown view '{view}' (known: {', '.join(VIEW_FLIPS)})")
    if not settings.views or len(set(settings.views)) != len(settings.views):
        raise UserError(f"--views: expected distinct views among {', '.join(VIEW_FLIPS)}, got "
                        f"'{','.join(settings.views)}'")
    dataset = CocoDataset(annotations, images_dir)
    teacher = Teacher(teacher_path, device=device, precision=precision)
    if not same_ids(teacher.spec.category_ids, dataset.category_ids):
        raise UserError(f"{annotations}: categories (ids {dataset.category_ids[:8]}) differ from "
                        f"the teacher's (ids {teacher.spec.category_ids[:8]})")
    prep = view_preprocessing(teacher, settings)
    header = cache_header(teacher, teacher_path, prep, settings, annotations)
    if not dist.is_main:
        barrier(dist)  # rank 0 claims (or clears) the folder first
    try:
        writer = shards.ShardWriter(out_dir, header=header, codec=shards.SparseCodec(),
                                    shard_size=settings.shard_size, rank=dist.rank,
                                    overwrite=overwrite)
    except shards.ShardError as err:
        raise UserError(f"{out_dir}: {err}") from None
    finally:
        if dist.is_main:
            barrier(dist)

    ordered = training_order(dataset.records, settings.shuffle_seed)
    if dist.is_main and len(ordered) < len(dataset.records):
        log.info("left out %d of %d images: no boxes to train on", len(dataset.records) - len(ordered),
                 len(dataset.records))
    groups = [ordered[i:i + settings.batch_size] for i in range(0, len(ordered), settings.batch_size)]
    records = [r for group in split_for_rank(groups, dist.rank, dist.world_size) for r in group]
    by_key = {sample_key(r.image_id): r for r in records}
    index_of = {r.image_id: i for i, r in enumerate(ordered)}
    plans = writer.plan(list(by_key))
    todo = [p for p in plans if not p.done]
    done_images = sum(len(p.keys) for p in plans if p.done)
    if progress:
        progress.start(total=len(records), done=done_images)
    for plan in todo:
        with writer.open_shard(plan) as shard:
            for group in _groups_of(plan.keys, by_key, index_of, settings.batch_size,
                                    ordered):
                for record, item in _teacher_group(group, dataset, teacher, prep, settings):
                    key = sample_key(record.image_id)
                    if key not in plan.keys:
                        continue
                    if isinstance(item, str):
                        shard.skip(key, item)
                    else:
                        shard.write(key, **item)
                    if progress:
                        progress.advance(1)
    writer.finish()
    barrier(dist)
    if dist.is_main:
        return shards.merge_manifests(out_dir, dist.world_size, command=command)
    return None


def training_order(records, shuffle_seed: int) -> list:
    """The records training uses (with boxes), shuffled by ``shuffle_seed``."""
    trainable = [r for r in records if r.trainable]
    order = np.random.default_rng(shuffle_seed).permutation(len(trainable))
    return [trainable[i] for i in order]


def _groups_of(keys, by_key, index_of, batch_size, ordered):
    """The fixed image groups (of the full ordered list) that cover ``keys``, whole, in order.
    index_of: image id -> position in ``ordered`` (built once, not per shard)."""
    seen, out = set(), []
    for key in keys:
        g = index_of[by_key[key].image_id] // batch_size
        if g not in seen:
            seen.add(g)
            out.append(ordered[g * batch_size:(g + 1) * batch_size])
    return out


def _teacher_group(group, dataset: CocoDataset, teacher: Teacher, prep: Preprocessing,
                   s: CacheSettings):
    """Yield (record, sample dict | skip reason) for a group of images."""
    loaded = []
    for record in group:
        try:
            path = dataset.image_path(record)
            image = np.asarray(dataset.load_image(record))
            loaded.append((record, path, image))
        except ImageError as err:
            log.warning("skipping image: %s", err)
            yield record, str(err)
    jobs = [(i, view, make_recipe(prep, image.shape[0], image.shape[1], flip=VIEW_FLIPS[view]))
            for i, (_, _, image) in enumerate(loaded) for view in s.views]
    probs = _run_teacher(teacher, [loaded[i][2] for i, _, _ in jobs], [r for _, _, r in jobs], prep)
    layout = teacher.spec.anchor_layout
    for i, (record, path, image) in enumerate(loaded):
        views = [dict(name=view, recipe={**recipe, "image_id": record.image_id},
                      probs=probs[j], level_sizes=layout.level_sizes(tuple(recipe["padded_size"])))
                 for j, (k, view, recipe) in enumerate(jobs) if k == i]
        image_bytes, ext = _image_bytes(path, image)
        target = {"image_id": record.image_id, "file_name": record.file_name,
                  "width": record.width, "height": record.height,
                  "boxes": record.boxes.tolist(), "category_ids": record.category_ids.tolist(),
                  "crowd_boxes": record.crowd_boxes.tolist()}
        if record.scores is not None:
            target["scores"] = record.scores.tolist()
        yield record, dict(image_bytes=image_bytes, image_ext=ext, target=target, views=views)


def _run_teacher(teacher: Teacher, images, recipes, prep) -> list:
    """Teacher probabilities per view, batching the views that share a padded size: numpy
    arrays, or on a GPU tensors left there (the shard writer encodes them on the device)."""
    out = [None] * len(images)
    sizes = sorted({tuple(r["padded_size"]) for r in recipes})
    for size in sizes:
        idx = [i for i, r in enumerate(recipes) if tuple(r["padded_size"]) == size]
        probs = teacher.views_probs([images[i] for i in idx], [recipes[i] for i in idx], prep)
        for i, p in zip(idx, probs):
            out[i] = p.float() if p.is_cuda else p.numpy().astype(np.float32, copy=False)
    return out


def _image_bytes(path: Path, image: np.ndarray) -> tuple[bytes, str]:
    """The file's own bytes when it is a JPEG or PNG, else a PNG re-encoding."""
    ext = FORMAT_OF_EXT.get(path.suffix.lower())
    if ext is not None:
        return path.read_bytes(), ext
    import io
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue(), "png"
