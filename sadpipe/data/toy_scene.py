"""One toy image: a textured backdrop, clutter, labelled shapes with capped occlusion, boxes.

Everything in an image is drawn from ``numpy.random.Generator(SeedSequence([seed, split_id,
index]))``, so an image depends on nothing but those three numbers.
"""
from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np

from sadpipe.data import toy_clutter, toy_paint, toy_shapes

BACKGROUND = 0  # owner-map value of backdrop pixels
DISTRACTOR = -1  # owner-map value of clutter pixels; object k of an image is k + 1
OPAQUE = 0.5  # coverage from which a pixel belongs to the layer drawn on top
MIN_VISIBLE = 0.5  # a labelled object keeps at least this fraction of its pixels visible
MIN_OBJECT_PIXELS = 12  # a labelled object always shows at least this many pixels

IMAGE_SIDE = (128, 192)  # pixels, both sides
IMAGE_ASPECTS = (1.0, 4 / 3, 3 / 2)  # long:short, landscape or portrait
OBJECTS_PER_IMAGE = (1, 6)
OBJECT_SIZE = (14.0, 80.0)  # longer side of an object's box, pixels, log-uniform
MAX_STRETCH = 1.6  # an object's own width:height stretch lies in [1/MAX_STRETCH, MAX_STRETCH]
TRUNCATION = 0.25  # an object's box may stick out of the image by this fraction of its size
PLACEMENT_TRIES = 10
CLUTTER_BEHIND = (1, 5)  # distractors drawn before the objects
CLUTTER_ABOVE = (0, 2)  # strokes drawn across the objects
MIN_CONTRAST = 60.0  # RGB distance of an object's colour from the backdrop behind it
COLOR_TRIES = 8
PIXEL_NOISE = (0.0, 6.0)  # standard deviation of the final per-pixel noise


class ToyObject(NamedTuple):
    category_id: int
    full_pixels: int  # opaque pixels of the whole object, before clipping and occlusion
    region: tuple  # (x0, y0, x1, y1): the part of the image its pixels can occupy


@dataclass
class ToyImage:
    """``pixels``: (H, W, 3) uint8. ``owner``: (H, W) int16, which layer each pixel shows:
    ``BACKGROUND``, ``DISTRACTOR`` or k + 1 for ``objects[k]``."""

    pixels: np.ndarray
    owner: np.ndarray
    objects: list

    def annotations(self) -> list:
        """COCO fields of each object: ``category_id``, ``bbox`` (tight x, y, w, h of its
        visible pixels, floats) and ``area`` (visible pixel count)."""
        out = []
        for k, obj in enumerate(self.objects):
            x0, y0, x1, y1 = obj.region
            mine = self.owner[y0:y1, x0:x1] == k + 1
            rows, cols = np.flatnonzero(mine.any(axis=1)), np.flatnonzero(mine.any(axis=0))
            box = [x0 + cols[0], y0 + rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1]
            out.append({"category_id": obj.category_id, "bbox": [float(v) for v in box],
                        "area": float(mine.sum())})
        return out


def render_toy_image(seed: int, split_id: int, index: int) -> ToyImage:
    """Draw image ``index`` of split ``split_id`` for ``seed``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, split_id, index]))
    height, width = _image_size(rng)
    scene = _Scene(toy_paint.background(rng, height, width))
    for _ in range(rng.integers(CLUTTER_BEHIND[0], CLUTTER_BEHIND[1] + 1)):
        scene.add_clutter(rng)
    for _ in range(rng.integers(OBJECTS_PER_IMAGE[0], OBJECTS_PER_IMAGE[1] + 1)):
        scene.add_object(rng)
    for _ in range(rng.integers(CLUTTER_ABOVE[0], CLUTTER_ABOVE[1] + 1)):
        scene.add_clutter(rng, kinds=toy_clutter.STROKES)
    noise = rng.standard_normal(scene.canvas.shape, dtype=np.float32)
    noisy = scene.canvas + noise * rng.uniform(*PIXEL_NOISE)
    pixels = np.rint(np.clip(noisy, 0, 255, out=noisy), out=noisy).astype(np.uint8)
    return ToyImage(pixels, scene.owner, scene.objects)


def _image_size(rng: np.random.Generator) -> tuple:
    """(height, width): both within ``IMAGE_SIDE``, aspect one of ``IMAGE_ASPECTS``."""
    aspect = IMAGE_ASPECTS[rng.integers(len(IMAGE_ASPECTS))]
    long_side = int(rng.integers(int(np.ceil(IMAGE_SIDE[0] * aspect)), IMAGE_SIDE[1] + 1))
    short_side = int(round(long_side / aspect))
    return (short_side, long_side) if rng.random() < 0.5 else (long_side, short_side)


def _sample_shape(rng: np.random.Generator) -> tuple:
    """(category index, Layer) of a random category instance with random size, stretch,
    rotation and sub-pixel phase, near the image origin."""
    category_index = int(rng.integers(len(toy_shapes.CATEGORIES)))
    outline = toy_shapes.sample_outline(category_index, rng)
    posed = toy_shapes.pose(outline, size=np.exp(rng.uniform(*np.log(OBJECT_SIZE))),
                            aspect=np.exp(rng.uniform(-1, 1) * np.log(MAX_STRETCH)),
                            angle=rng.uniform(0, 2 * np.pi))
    posed = toy_shapes.translate(posed, *rng.uniform(0, 1, 2))
    layer = toy_paint.rasterize(fills=posed.solid, holes=posed.holes)
    return category_index, layer


def _must_show(full_pixels):
    """Pixels a labelled object of ``full_pixels`` must keep visible."""
    return np.maximum(MIN_VISIBLE * full_pixels, MIN_OBJECT_PIXELS)


class _Scene:
    """The canvas being drawn, which layer owns each pixel, and what is left of each object."""

    def __init__(self, canvas: np.ndarray):
        self.canvas = canvas
        self.owner = np.full(canvas.shape[:2], BACKGROUND, dtype=np.int16)
        self.objects = []
        self.visible = np.zeros(0, dtype=np.int64)  # opaque pixels still showing, per object

    def add_clutter(self, rng: np.random.Generator, kinds=toy_clutter.DISTRACTORS) -> None:
        """Draw a distractor, unless it would hide too much of a labelled object."""
        drawn = toy_clutter.sample_distractor(rng, *self.owner.shape, kinds=kinds)
        if drawn is not None and self._leaves_visible(drawn[0]):
            self._paint(*drawn, DISTRACTOR)

    def add_object(self, rng: np.random.Generator) -> None:
        """Draw a labelled shape where neither it nor any earlier one ends up less than
        ``MIN_VISIBLE`` visible; give up after ``PLACEMENT_TRIES`` positions."""
        category_index, shape = _sample_shape(rng)
        full_pixels = int((shape.alpha >= OPAQUE).sum())
        if full_pixels < MIN_OBJECT_PIXELS:
            return
        layer = self._place(rng, shape, full_pixels)
        if layer is None:
            return
        texture_kind = toy_paint.TEXTURES[rng.integers(len(toy_paint.TEXTURES))]
        color = self._contrasting_color(rng, layer, category_index)
        fill = toy_paint.texture(texture_kind, rng, *layer.alpha.shape, color)
        image, _ = toy_paint.clip(layer, *self.owner.shape)
        region = (image[1].start, image[0].start, image[1].stop, image[0].stop)
        self.objects.append(ToyObject(toy_shapes.CATEGORIES[category_index][0], full_pixels, region))
        self.visible = np.append(self.visible, 0)
        self._paint(layer, fill, len(self.objects))

    def _place(self, rng, shape: toy_paint.Layer, full_pixels: int) -> Optional[toy_paint.Layer]:
        """``shape`` moved by whole pixels to a spot that keeps everything visible enough."""
        height, width = self.owner.shape
        opaque = shape.alpha >= OPAQUE
        rows, cols = np.flatnonzero(opaque.any(axis=1)), np.flatnonzero(opaque.any(axis=0))
        left, right = shape.x0 + cols[0], shape.x0 + cols[-1] + 1
        top, bottom = shape.y0 + rows[0], shape.y0 + rows[-1] + 1
        slack_x, slack_y = TRUNCATION * (right - left), TRUNCATION * (bottom - top)
        for _ in range(PLACEMENT_TRIES):
            dx = int(rng.integers(int(-left - slack_x), int(width - right + slack_x) + 1))
            dy = int(rng.integers(int(-top - slack_y), int(height - bottom + slack_y) + 1))
            layer = shape._replace(x0=shape.x0 + dx, y0=shape.y0 + dy)
            if self._leaves_visible(layer, new_object_pixels=full_pixels):
                return layer
        return None

    def _leaves_visible(self, layer: toy_paint.Layer, new_object_pixels: Optional[int] = None) -> bool:
        """Whether drawing ``layer`` on top leaves every labelled object showing enough of
        itself (and, for a new object of ``new_object_pixels``, the new one inside the image)."""
        where = toy_paint.clip(layer, *self.owner.shape)
        if where is None:
            return new_object_pixels is None
        image, local = where
        covered = self.owner[image][layer.alpha[local] >= OPAQUE]
        if new_object_pixels is not None and covered.size < _must_show(new_object_pixels):
            return False
        hidden = np.bincount(covered[covered > BACKGROUND], minlength=len(self.objects) + 1)[1:]
        full = np.array([obj.full_pixels for obj in self.objects])
        return bool(np.all(self.visible - hidden >= _must_show(full)))

    def _contrasting_color(self, rng, layer: toy_paint.Layer, category_index: int) -> np.ndarray:
        """An object colour (see ``toy_shapes.object_color``) at least ``MIN_CONTRAST`` from
        the backdrop it covers (or the most distant of ``COLOR_TRIES`` candidates)."""
        image, local = toy_paint.clip(layer, *self.owner.shape)
        behind = self.canvas[image][layer.alpha[local] >= OPAQUE].mean(axis=0)
        typical = rng.random() < toy_shapes.TYPICAL_COLOR_PROB
        best, best_distance = None, -1.0
        for _ in range(COLOR_TRIES):
            color = toy_shapes.object_color(category_index, rng, typical=typical)
            distance = float(np.linalg.norm(color - behind))
            if distance > best_distance:
                best, best_distance = color, distance
            if distance >= MIN_CONTRAST:
                break
        return best

    def _paint(self, layer: toy_paint.Layer, fill: np.ndarray, owner_value: int) -> None:
        where = toy_paint.clip(layer, *self.owner.shape)
        if where is None:
            return
        toy_paint.composite(self.canvas, layer, fill)
        image, local = where
        opaque = layer.alpha[local] >= OPAQUE
        owners = self.owner[image]
        hidden = owners[opaque]
        self.visible -= np.bincount(hidden[hidden > BACKGROUND], minlength=len(self.objects) + 1)[1:]
        owners[opaque] = owner_value
        if owner_value > BACKGROUND:
            self.visible[owner_value - 1] += int(opaque.sum())
