"""Classification crops for pretraining the small bodies: the embedded world's ImageNet.

Crops are cut from images of the generator's own ``pretrain`` split (split id
``PRETRAIN_SPLIT_ID``), never from the train, val or unlabeled splits the detectors use.
Every labelled object gives one crop: a square around its box, ``CONTEXT`` times the box's
longer side, shifted by up to ``SHIFT`` of that side, resized to ``CROP_SIZE``; its label is
the category index. Every image also gives ``BACKGROUND_PER_IMAGE`` crops centred where no
object box is, labelled ``BACKGROUND`` (= number of categories): clutter and backdrop.

Crop ``k`` of image ``index`` depends only on (seed, index), like the images themselves.
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing

import numpy as np
from PIL import Image

from sadpipe.data import toy_shapes
from sadpipe.data.toy_scene import render_toy_image

PRETRAIN_SPLIT_ID = 3  # train 0, val 1, unlabeled 2 (sadpipe.data.toy.SPLITS)
CROP_SIZE = 48
CONTEXT = (1.2, 2.2)  # crop side / object box's longer side
SHIFT = 0.15  # of the crop side, each direction
BACKGROUND_PER_IMAGE = 1
BACKGROUND_SIDE = (16.0, 96.0)  # pixels, log-uniform
BACKGROUND_TRIES = 20
NUM_CLASSES = len(toy_shapes.CATEGORIES) + 1
BACKGROUND = NUM_CLASSES - 1
CHUNK = 32  # images per task handed to a worker process


def image_crops(seed: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Crops (K, CROP_SIZE, CROP_SIZE, 3) uint8 and labels (K,) int64 of one pretrain image."""
    toy = render_toy_image(seed, PRETRAIN_SPLIT_ID, index)
    rng = np.random.default_rng(np.random.SeedSequence([seed, PRETRAIN_SPLIT_ID, index, 1]))
    image = Image.fromarray(toy.pixels)
    index_of = {cid: i for i, (cid, _, _) in enumerate(toy_shapes.CATEGORIES)}
    boxes = [a["bbox"] for a in toy.annotations()]
    crops, labels = [], []
    for ann in toy.annotations():
        x, y, w, h = ann["bbox"]
        side = max(w, h) * rng.uniform(*CONTEXT)
        cx, cy = x + w / 2 + rng.uniform(-SHIFT, SHIFT) * side, y + h / 2 + rng.uniform(-SHIFT, SHIFT) * side
        crops.append(_cut(image, cx, cy, side))
        labels.append(index_of[ann["category_id"]])
    for _ in range(BACKGROUND_PER_IMAGE):
        spot = _background_spot(rng, boxes, *toy.pixels.shape[:2])
        if spot is not None:
            crops.append(_cut(image, *spot))
            labels.append(BACKGROUND)
    if not crops:
        return np.zeros((0, CROP_SIZE, CROP_SIZE, 3), np.uint8), np.zeros(0, np.int64)
    return np.stack(crops), np.array(labels, dtype=np.int64)


def make_crops(seed: int, indices: range, *, workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Crops and labels of the pretrain images ``indices``, in image order (the output does
    not depend on ``workers``)."""
    tasks = [(seed, index) for index in indices]
    if not tasks:
        return np.zeros((0, CROP_SIZE, CROP_SIZE, 3), np.uint8), np.zeros(0, np.int64)
    if workers == 1 or len(tasks) <= CHUNK:
        parts = [image_crops(*t) for t in tasks]
    else:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            parts = list(pool.map(_image_crops_task, tasks, chunksize=CHUNK))
    return np.concatenate([c for c, _ in parts]), np.concatenate([lab for _, lab in parts])


def _image_crops_task(task: tuple) -> tuple[np.ndarray, np.ndarray]:
    return image_crops(*task)


def _cut(image: Image.Image, cx: float, cy: float, side: float) -> np.ndarray:
    """A square of ``side`` pixels centred on (cx, cy), black outside the image, resized to
    CROP_SIZE × CROP_SIZE."""
    half = side / 2
    box = tuple(int(round(v)) for v in (cx - half, cy - half, cx + half, cy + half))
    return np.asarray(image.crop(box).resize((CROP_SIZE, CROP_SIZE), Image.BILINEAR))


def _background_spot(rng, boxes: list, height: int, width: int):
    """(cx, cy, side) of a square whose centre lies in no object box, or None."""
    for _ in range(BACKGROUND_TRIES):
        side = float(np.exp(rng.uniform(*np.log(BACKGROUND_SIDE))))
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        if not any(x <= cx <= x + w and y <= cy <= y + h for x, y, w, h in boxes):
            return cx, cy, side
    return None
