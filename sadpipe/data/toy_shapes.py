"""Object categories of the toy dataset: outlines with per-instance variation, and their pose.

An outline is a set of filled polygons minus a set of hole polygons, in unit coordinates
(x to the right, y down, roughly within [-1, 1]). ``pose`` stretches, rotates and scales it
so that its bounding box's longer side is ``size`` pixels.
"""
from typing import Callable, NamedTuple

import numpy as np

from sadpipe.data import toy_paint

SUPERCATEGORY = "shape"
CURVE_VERTICES = 48  # vertices used for circles and other curves
# Colour cue: most instances of a category take a hue near the category's own (categories
# spread evenly around the hue circle), the rest any hue; shape always decides.
TYPICAL_COLOR_PROB = 0.7
TYPICAL_HUE_JITTER = 0.04  # ± on the hue circle [0, 1)
TYPICAL_SATURATION = (0.45, 1.0)
TYPICAL_VALUE = (0.45, 1.0)


class Outline(NamedTuple):
    """``solid``: polygons to fill, ``holes``: polygons cleared afterwards; each (K, 2)."""

    solid: tuple
    holes: tuple = ()

    def map(self, fn: Callable[[np.ndarray], np.ndarray]) -> "Outline":
        return Outline(tuple(fn(p) for p in self.solid), tuple(fn(p) for p in self.holes))

    def extent(self) -> tuple:
        """(x_min, y_min, x_max, y_max) of the filled polygons."""
        pts = np.concatenate(self.solid)
        return (*pts.min(axis=0), *pts.max(axis=0))


def _regular(n: int, radius: float = 1.0, phase: float = 0.0, center=(0.0, 0.0)) -> np.ndarray:
    """Vertices of a regular n-gon: (n, 2)."""
    angles = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(angles), np.sin(angles)], axis=1) * radius + np.asarray(center)


def _circle(rng: np.random.Generator) -> Outline:
    return Outline((_regular(CURVE_VERTICES),))


def _square(rng: np.random.Generator) -> Outline:
    """A square whose corners are rounded by a random radius (0 = sharp)."""
    radius = rng.uniform(0.1, 0.35) if rng.random() < 0.5 else 0.0
    if radius == 0.0:
        return Outline((np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]),))
    arc = np.linspace(0, np.pi / 2, 6)
    corners = []
    for k, (cx, cy) in enumerate([(1, 1), (-1, 1), (-1, -1), (1, -1)]):
        a = arc + k * np.pi / 2
        corners.append(np.stack([np.cos(a), np.sin(a)], 1) * radius + np.array([cx, cy]) * (1 - radius))
    return Outline((np.concatenate(corners),))


def _triangle(rng: np.random.Generator) -> Outline:
    """Apex shifted sideways: from isosceles to clearly scalene."""
    apex = rng.uniform(-0.6, 0.6)
    return Outline((np.array([[-1.0, 1.0], [1.0, 1.0], [apex, -1.0]]),))


def _star(rng: np.random.Generator) -> Outline:
    points = int(rng.integers(5, 7))
    inner = rng.uniform(0.38, 0.55)
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)[:, None]
    return Outline((_regular(2 * points, phase=-np.pi / 2) * radii,))


def _cross(rng: np.random.Generator) -> Outline:
    """A plus sign; ``t`` is half the arm thickness."""
    t = rng.uniform(0.22, 0.42)
    pts = [(-t, -1), (t, -1), (t, -t), (1, -t), (1, t), (t, t),
           (t, 1), (-t, 1), (-t, t), (-1, t), (-1, -t), (-t, -t)]
    return Outline((np.array(pts, dtype=float),))


def _ring(rng: np.random.Generator) -> Outline:
    hole = _regular(CURVE_VERTICES, radius=rng.uniform(0.45, 0.72))
    return Outline((_regular(CURVE_VERTICES),), (hole,))


def _hexagon(rng: np.random.Generator) -> Outline:
    return Outline((_regular(6),))


def _crescent(rng: np.random.Generator) -> Outline:
    hole = _regular(CURVE_VERTICES, radius=rng.uniform(0.78, 0.95), center=(rng.uniform(0.35, 0.6), 0.0))
    return Outline((_regular(CURVE_VERTICES),), (hole,))


def _arrow(rng: np.random.Generator) -> Outline:
    """Points to +x: a shaft of half-width ``w`` and a head of length ``head``."""
    w, head, half = rng.uniform(0.12, 0.24), rng.uniform(0.6, 1.1), rng.uniform(0.4, 0.65)
    neck = 1.0 - head
    pts = [(-1, -w), (neck, -w), (neck, -half), (1, 0), (neck, half), (neck, w), (-1, w)]
    return Outline((np.array(pts, dtype=float),))


def _heart(rng: np.random.Generator) -> Outline:
    t = np.linspace(0, 2 * np.pi, 2 * CURVE_VERTICES, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return Outline((np.stack([x, y], 1) / 17.0,))


# COCO-style categories. Ids are non-contiguous on purpose, so that code mapping category ids
# to class indices (and back) cannot get away with ``index = id - 1``.
CATEGORIES = (
    (1, "circle", _circle),
    (2, "square", _square),
    (3, "triangle", _triangle),
    (5, "star", _star),
    (7, "cross", _cross),
    (8, "ring", _ring),
    (11, "hexagon", _hexagon),
    (13, "crescent", _crescent),
    (14, "arrow", _arrow),
    (17, "heart", _heart),
)


def coco_categories() -> list:
    """The ``categories`` list of the dataset's COCO files."""
    return [{"id": cid, "name": name, "supercategory": SUPERCATEGORY} for cid, name, _ in CATEGORIES]


def sample_outline(category_index: int, rng: np.random.Generator) -> Outline:
    """A new instance of ``CATEGORIES[category_index]`` with its own shape parameters."""
    return CATEGORIES[category_index][2](rng)


def pose(outline: Outline, *, size: float, aspect: float = 1.0, angle: float = 0.0) -> Outline:
    """Stretch to width:height ``aspect``, rotate by ``angle`` radians (clockwise on screen),
    then scale so the longer side of the bounding box is ``size``; centred on the origin."""
    stretch = np.array([np.sqrt(aspect), 1.0 / np.sqrt(aspect)])
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, s], [-s, c]])  # row vectors: p @ rotation
    turned = outline.map(lambda p: (p * stretch) @ rotation)
    x0, y0, x1, y1 = turned.extent()
    scale = size / max(x1 - x0, y1 - y0)
    middle = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    return turned.map(lambda p: (p - middle) * scale)


def translate(outline: Outline, dx: float, dy: float) -> Outline:
    return outline.map(lambda p: p + np.array([dx, dy]))


def typical_hue(category_index: int) -> float:
    """The category's own hue in [0, 1)."""
    return category_index / len(CATEGORIES)


def object_color(category_index: int, rng: np.random.Generator, *, typical: bool) -> np.ndarray:
    """An RGB colour (3,) float32 for an instance: near the category's hue when ``typical``,
    any hue otherwise."""
    if not typical:
        return toy_paint.random_color(rng)
    hue = (typical_hue(category_index) + rng.uniform(-TYPICAL_HUE_JITTER, TYPICAL_HUE_JITTER)) % 1.0
    return toy_paint.random_color(rng, hue=hue, saturation=TYPICAL_SATURATION, value=TYPICAL_VALUE)
