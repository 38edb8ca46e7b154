"""Distractors of the toy dataset: clutter that is not any category and gets no label.

Lines, scribbles, ellipse outlines, irregular blobs, and partial shapes (a category's shape
with most of it cut away, so the detector must learn that a fragment is not the object).
"""
from typing import Optional

import numpy as np

from sadpipe.data import toy_paint, toy_shapes

DISTRACTORS = ("line", "scribble", "ellipse_outline", "blob", "partial_shape")
STROKES = ("line", "scribble", "ellipse_outline")  # thin clutter, also drawn across objects
PARTIAL_KEEP = (0.15, 0.35)  # fraction of a shape's area a partial shape keeps
OUTLINE_VERTICES = 40


def sample_distractor(rng: np.random.Generator, height: int, width: int,
                      kinds=DISTRACTORS) -> Optional[tuple]:
    """One distractor somewhere in an (height, width) image: (Layer, fill), where fill is
    (h, w, 3) or (3,) float32 (see ``toy_paint.composite``); None if it came out empty."""
    kind = kinds[rng.integers(len(kinds))]
    center = rng.uniform((0, 0), (width, height))
    if kind in STROKES:
        layer = _stroke(kind, rng, center, max(height, width))
        texture = ("solid", "gradient")[rng.integers(2)]
    else:
        layer = _blob(rng, center) if kind == "blob" else _partial_shape(rng, center)
        texture = toy_paint.TEXTURES[rng.integers(len(toy_paint.TEXTURES))]
    if layer is None:
        return None
    fill = toy_paint.texture(texture, rng, *layer.alpha.shape, toy_paint.random_color(rng))
    return layer, fill


def _stroke(kind: str, rng: np.random.Generator, center: np.ndarray, longest: int) -> toy_paint.Layer:
    width = rng.uniform(1.0, 3.5)
    if kind == "line":
        direction = _unit(rng.uniform(0, 2 * np.pi))
        half = rng.uniform(8, longest / 2)
        points = np.stack([center - half * direction, center + half * direction])
    elif kind == "scribble":
        headings = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.9, int(rng.integers(4, 12))))
        steps = rng.uniform(4, 20, (len(headings), 1)) * np.stack([np.cos(headings), np.sin(headings)], 1)
        points = center + np.concatenate([np.zeros((1, 2)), np.cumsum(steps, axis=0)])
    else:  # ellipse_outline: closed polyline
        radii = rng.uniform(4, 50, 2)
        t = np.linspace(0, 2 * np.pi, OUTLINE_VERTICES + 1)
        ellipse = np.stack([radii[0] * np.cos(t), radii[1] * np.sin(t)], 1)
        angle = rng.uniform(0, np.pi)
        rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
        points = center + ellipse @ rotation
    return toy_paint.rasterize(lines=[points], line_width=width)


def _blob(rng: np.random.Generator, center: np.ndarray) -> toy_paint.Layer:
    """A lumpy closed shape: a circle whose radius wobbles with harmonics 2-4."""
    t = np.linspace(0, 2 * np.pi, toy_shapes.CURVE_VERTICES, endpoint=False)
    radius = np.ones_like(t)
    for k in (2, 3, 4):
        radius += rng.uniform(0.08, 0.25) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    scale = np.exp(rng.uniform(np.log(4), np.log(50)))
    points = center + scale * radius[:, None] * np.stack([np.cos(t), np.sin(t)], 1)
    return toy_paint.rasterize(fills=[points])


def _partial_shape(rng: np.random.Generator, center: np.ndarray) -> Optional[toy_paint.Layer]:
    """A random category's shape cut by a straight line, keeping ``PARTIAL_KEEP`` of it."""
    outline = toy_shapes.sample_outline(int(rng.integers(len(toy_shapes.CATEGORIES))), rng)
    posed = toy_shapes.pose(outline, size=np.exp(rng.uniform(np.log(16), np.log(100))),
                            aspect=np.exp(rng.uniform(-0.4, 0.4)), angle=rng.uniform(0, 2 * np.pi))
    posed = toy_shapes.translate(posed, *center)
    layer = toy_paint.rasterize(fills=posed.solid, holes=posed.holes)
    opaque = layer.alpha >= 0.5
    if not opaque.any():
        return None
    direction = _unit(rng.uniform(0, 2 * np.pi))
    yy, xx = np.mgrid[0:opaque.shape[0], 0:opaque.shape[1]]
    along = xx * direction[0] + yy * direction[1]
    cut = np.quantile(along[opaque], 1.0 - rng.uniform(*PARTIAL_KEEP))
    alpha = layer.alpha * np.clip(along - cut + 0.5, 0.0, 1.0).astype(np.float32)
    return layer._replace(alpha=alpha)


def _unit(angle: float) -> np.ndarray:
    return np.array([np.cos(angle), np.sin(angle)])
