"""Teacher-like RetinaNet class scores, for testing and benchmarking the codec without a model.

What it imitates (stated by the project for a trained RetinaNet; the numbers below are this
generator's choices, not measurements of a particular network):

* Background entries: sigmoid scores mostly between 1e-5 and 1e-2 (median ≈ 3e-4; with the
  defaults about 98% of all entries fall in [1e-5, 1e-2] and ~0.5% above 5e-3). In logit space
  a background score is the sum of a class bias, a spatially smooth "objectness" field shared
  by all classes, a smooth class-specific field, an offset per anchor shape, and an independent
  per-entry residual (standard deviations below).
* Objects: a few per view (2-8), each on one pyramid level (weaker on the neighbouring ones),
  for one class (sometimes a second, confusable class lower). Anchors on and around an object
  score 0.05-0.95 for that class, decaying with distance from its centre and with anchor shape.
  This gives a few hundred anchors at 0.05-0.95 per COCO-size view, and a halo of 1e-2-5e-2.

Anchors are laid out like torchvision's RetinaNet head output: level by level, and within a
level in (H, W, A) order, i.e. anchor ``(h * W + w) * A + a``. The feature map of a level with
``n`` anchors is taken as ``ceil(n / A)`` cells in a 4:3 (width:height) grid.
"""
import math

import numpy as np

BACKGROUND_LOGIT = -8.0  # median background logit: sigmoid(-8) ≈ 3.4e-4
CLASS_BIAS_STD = 0.5  # per class, whole view
OBJECTNESS_STD = 0.8  # smooth field shared by all classes
CLASS_FIELD_STD = 0.4  # smooth field, one per class
ANCHOR_SHAPE_STD = 0.3  # per (level, anchor shape)
RESIDUAL_STD = 0.3  # independent per (anchor, class)
SMOOTH_CELLS = 2.0  # correlation length of the smooth fields, in feature-map cells
OBJECTS_PER_VIEW = (2, 8)  # inclusive range
OBJECT_PEAK = (0.3, 0.95)  # score at an object's best anchor
OBJECT_RADIUS_CELLS = (1.0, 2.5)
SECOND_CLASS_PROB = 0.3


def teacher_like_scores(num_anchors, num_classes, *, level_sizes, rng, anchors_per_location=9,
                        objects_per_view=OBJECTS_PER_VIEW, residual_std=RESIDUAL_STD):
    """Random sigmoid scores shaped like a trained RetinaNet teacher's.

    Args:
        num_anchors: HWA, must equal ``sum(level_sizes)``.
        num_classes: C.
        level_sizes: anchors per pyramid level, e.g. ``[84375, 21546, 5472, 1440, 360]``.
        rng: ``numpy.random.Generator`` (the only source of randomness).
        anchors_per_location: A.
        objects_per_view: inclusive (min, max) number of objects.
        residual_std: independent per-entry logit noise (the part no smooth structure explains).

    Returns:
        probs: (HWA, C) float32 in (0, 1).
    """
    level_sizes = [int(n) for n in level_sizes]
    if sum(level_sizes) != num_anchors or min(level_sizes, default=0) <= 0:
        raise ValueError(f"level_sizes: must be positive and sum to num_anchors={num_anchors}")
    class_bias = rng.normal(0.0, CLASS_BIAS_STD, num_classes)
    objects = _draw_objects(len(level_sizes), num_classes, rng, objects_per_view)
    logits = [
        _level_logits(level, n, num_classes, class_bias, objects, rng, anchors_per_location,
                      residual_std)
        for level, n in enumerate(level_sizes)
    ]
    out = np.concatenate(logits)
    return (1.0 / (1.0 + np.exp(-out))).astype(np.float32)


def _draw_objects(num_levels, num_classes, rng, objects_per_view):
    lo, hi = objects_per_view
    objects = []
    for _ in range(int(rng.integers(lo, hi + 1))):
        classes = [int(rng.integers(num_classes))]
        if num_classes > 1 and rng.random() < SECOND_CLASS_PROB:
            classes.append(int((classes[0] + rng.integers(1, num_classes)) % num_classes))
        objects.append(dict(level=int(rng.integers(num_levels)), classes=classes,
                            peak=float(rng.uniform(*OBJECT_PEAK)),
                            radius=float(rng.uniform(*OBJECT_RADIUS_CELLS)),
                            centre=float(rng.random())))
    return objects


def _level_logits(level, n, num_classes, class_bias, objects, rng, A, residual_std):
    cells = -(-n // A)
    width = max(1, round(math.sqrt(cells * 4 / 3)))
    height = -(-cells // width)
    objectness = _smooth_fields(1, height, width, rng)[0].reshape(-1)[:cells] * OBJECTNESS_STD
    per_class = _smooth_fields(num_classes, height, width, rng).reshape(num_classes, -1)
    per_class = per_class[:, :cells].T * CLASS_FIELD_STD  # (cells, C)
    shape = rng.normal(0.0, ANCHOR_SHAPE_STD, A)
    logits = (BACKGROUND_LOGIT + class_bias + objectness[:, None, None] + per_class[:, None, :]
              + shape[None, :, None]
              + rng.normal(0.0, residual_std, (cells, A, num_classes))).astype(np.float32)
    rows, cols = np.divmod(np.arange(cells), width)
    for obj in objects:
        if abs(obj["level"] - level) <= 1:
            _add_object(logits, obj, obj["level"] != level, rows, cols, rng)
    return logits.reshape(cells * A, num_classes)[:n]


def _add_object(logits, obj, neighbour, rows, cols, rng):
    """Raise scores on and around one object (in place). logits: (cells, A, C)."""
    centre = min(int(obj["centre"] * len(rows)), len(rows) - 1)
    radius = obj["radius"] * (0.6 if neighbour else 1.0)
    dist2 = ((rows - rows[centre]) ** 2 + (cols - cols[centre]) ** 2) / radius ** 2
    near = np.flatnonzero(dist2 < 4.0)
    peak = math.log(obj["peak"] / (1.0 - obj["peak"])) - (1.5 if neighbour else 0.0)
    logits[near] += (0.7 * np.exp(-dist2[near]))[:, None, None]
    for rank, cls in enumerate(obj["classes"]):
        shape_miss = np.abs(rng.normal(0.0, 1.2, (len(near), logits.shape[1])))
        bump = peak - 2.0 * rank - 2.5 * dist2[near, None] - shape_miss
        logits[near, :, cls] = np.maximum(logits[near, :, cls], bump)


def _smooth_fields(count, height, width, rng):
    """``count`` Gaussian-smoothed white-noise fields with unit standard deviation (in
    expectation; the scale comes from the filter, so tiny maps are not blown up)."""
    noise = rng.normal(0.0, 1.0, (count, height, width))
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[None, :]
    kernel = np.exp(-2.0 * (math.pi * SMOOTH_CELLS) ** 2 * (fy ** 2 + fx ** 2))
    fields = np.fft.ifft2(np.fft.fft2(noise) * kernel).real
    return fields / math.sqrt(float(np.mean(kernel ** 2)))
