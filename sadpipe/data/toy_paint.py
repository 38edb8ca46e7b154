"""Painting for the toy dataset: anti-aliased coverage masks, colours, textures, backgrounds.

Images are float32 arrays ``(H, W, 3)`` in [0, 255]. A ``Layer`` is the coverage (alpha) of
one drawn thing over a rectangle of the image; pixel (row i, column j) covers the square
[j, j+1) x [i, i+1) in image coordinates.
"""
import colorsys
from typing import NamedTuple, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

SUPERSAMPLE = 4  # sub-pixels per pixel side when rasterising (anti-aliasing)
TEXTURES = ("solid", "striped", "dotted", "noisy", "gradient")
BACKGROUNDS = ("noise", "gradient", "stripes", "checker")


class Layer(NamedTuple):
    """``alpha``: (h, w) float32 coverage in [0, 1]; its top-left pixel is (x0, y0) of the
    image (may lie outside the image)."""

    alpha: np.ndarray
    x0: int
    y0: int


def rasterize(fills: Sequence[np.ndarray] = (), holes: Sequence[np.ndarray] = (),
              lines: Sequence[np.ndarray] = (), *, line_width: float = 1.0,
              supersample: int = SUPERSAMPLE) -> Layer:
    """Coverage of ``fills`` (polygons, (K, 2) image coordinates) minus ``holes``, plus
    ``lines`` (polylines stroked ``line_width`` pixels wide)."""
    pts = np.concatenate([*fills, *lines])
    pad = line_width / 2 + 1
    x0, y0 = np.floor(pts.min(axis=0) - pad).astype(int)
    x1, y1 = np.ceil(pts.max(axis=0) + pad).astype(int)
    canvas = Image.new("L", (int(x1 - x0) * supersample, int(y1 - y0) * supersample), 0)
    draw = ImageDraw.Draw(canvas)

    def to_canvas(p):  # image coordinates -> sub-pixel indices (PIL samples pixel centres)
        return ((p - (x0, y0)) * supersample - 0.5).ravel().tolist()

    for polygon in fills:
        draw.polygon(to_canvas(polygon), fill=255)
    for polygon in holes:
        draw.polygon(to_canvas(polygon), fill=0)
    for polyline in lines:
        draw.line(to_canvas(polyline), fill=255, width=max(1, round(line_width * supersample)),
                  joint="curve")
    alpha = np.asarray(canvas.reduce(supersample), dtype=np.float32) / 255.0
    return Layer(alpha, int(x0), int(y0))


def clip(layer: Layer, height: int, width: int) -> Optional[tuple]:
    """(image slices, alpha slices) of the part of ``layer`` inside an image; None if none."""
    h, w = layer.alpha.shape
    ix0, iy0 = max(layer.x0, 0), max(layer.y0, 0)
    ix1, iy1 = min(layer.x0 + w, width), min(layer.y0 + h, height)
    if ix0 >= ix1 or iy0 >= iy1:
        return None
    image = (slice(iy0, iy1), slice(ix0, ix1))
    local = (slice(iy0 - layer.y0, iy1 - layer.y0), slice(ix0 - layer.x0, ix1 - layer.x0))
    return image, local


def composite(canvas: np.ndarray, layer: Layer, fill: np.ndarray) -> None:
    """Paint ``fill`` ((h, w, 3) like the layer, or (3,)) over ``canvas`` (H, W, 3) in place."""
    where = clip(layer, *canvas.shape[:2])
    if where is None:
        return
    image, local = where
    alpha = layer.alpha[local][..., None]
    paint = fill[local] if fill.ndim == 3 else fill
    canvas[image] = canvas[image] * (1.0 - alpha) + paint * alpha


def random_color(rng: np.random.Generator, *, hue=None, saturation=(0.25, 1.0),
                 value=(0.3, 1.0)) -> np.ndarray:
    """An RGB colour (3,) float32 in [0, 255]: the given ``hue`` in [0, 1), or any."""
    hue = rng.uniform() if hue is None else hue
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(*saturation), rng.uniform(*value))
    return np.array(rgb, dtype=np.float32) * 255.0


def pattern(kind: str, rng: np.random.Generator, height: int, width: int, *,
            period=(3.0, 10.0)) -> np.ndarray:
    """A two-tone mix map (h, w) float32 in [0, 1]: 'stripes'/'soft_stripes', 'checker',
    'dots' or 'gradient' at a random angle, with a random ``period`` in pixels."""
    theta = rng.uniform(0, np.pi)
    yy, xx = np.ogrid[0:height, 0:width]
    u = (xx * np.cos(theta) + yy * np.sin(theta)).astype(np.float32)
    v = (yy * np.cos(theta) - xx * np.sin(theta)).astype(np.float32)
    step = rng.uniform(*period)
    phase = rng.uniform()
    if kind == "stripes":
        return (((u / step + phase) % 1.0) < rng.uniform(0.35, 0.65)).astype(np.float32)
    if kind == "soft_stripes":
        return 0.5 + 0.5 * np.sin(2 * np.pi * (u / step + phase))
    if kind == "checker":
        return ((np.floor(u / step + phase) + np.floor(v / step)) % 2).astype(np.float32)
    if kind == "dots":
        du, dv = u / step + phase, v / step
        du, dv = du - np.round(du), dv - np.round(dv)
        return (du * du + dv * dv < rng.uniform(0.2, 0.4) ** 2).astype(np.float32)
    if kind == "gradient":
        t = u + np.zeros_like(v)
        return (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    raise ValueError(f"unknown pattern {kind!r}")


def mix(t: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Blend two colours (3,) by a map ``t`` (h, w): (h, w, 3)."""
    return first + (second - first) * t[..., None]


def smooth_noise(rng: np.random.Generator, height: int, width: int, *, cell: int) -> np.ndarray:
    """Low-frequency colour noise (h, w, 3) float32 with unit-ish amplitude: normal values on
    a grid of ``cell`` pixels, interpolated bicubically."""
    coarse = rng.standard_normal((height // cell + 2, width // cell + 2, 3)).astype(np.float32)
    channels = [Image.fromarray(np.ascontiguousarray(coarse[..., c])).resize((width, height), Image.BICUBIC)
                for c in range(3)]
    return np.stack([np.asarray(ch) for ch in channels], axis=-1)


def texture(kind: str, rng: np.random.Generator, height: int, width: int, color: np.ndarray) -> np.ndarray:
    """The fill of one object or distractor: (h, w, 3) float32, or (3,) for 'solid'.
    ``color`` is the main colour; a second one is drawn for two-tone textures."""
    if kind == "solid":
        return color
    if kind == "noisy":
        sigma = rng.uniform(10, 35)
        return color + rng.normal(0, sigma, (height, width, 3)).astype(np.float32)
    other = random_color(rng)
    if kind == "striped":
        return mix(pattern("stripes", rng, height, width, period=(3, 10)), color, other)
    if kind == "dotted":
        return mix(pattern("dots", rng, height, width, period=(4, 9)), color, other)
    if kind == "gradient":
        return mix(pattern("gradient", rng, height, width), color, other)
    raise ValueError(f"unknown texture {kind!r}")


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured backdrop (H, W, 3) float32 in muted colours: smooth noise, a gradient,
    soft stripes or a rotated checkerboard, often with smooth noise on top."""
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    muted = dict(saturation=(0.0, 0.55), value=(0.2, 0.9))
    first, second = random_color(rng, **muted), random_color(rng, **muted)
    if kind == "noise":
        canvas = first + smooth_noise(rng, height, width, cell=int(rng.integers(8, 40))) * rng.uniform(20, 50)
    elif kind == "gradient":
        canvas = mix(pattern("gradient", rng, height, width), first, second)
    elif kind == "stripes":
        canvas = mix(pattern("soft_stripes", rng, height, width, period=(8, 40)), first, second)
    else:
        canvas = mix(pattern("checker", rng, height, width, period=(6, 32)), first, second)
    if rng.random() < 0.6:
        canvas = canvas + smooth_noise(rng, height, width, cell=int(rng.integers(6, 24))) * rng.uniform(5, 25)
    return np.array(np.broadcast_to(canvas, (height, width, 3)), dtype=np.float32)  # a copy
