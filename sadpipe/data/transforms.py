"""Input preprocessing shared by training, teacher inference and evaluation.

A *view* of an image is fully described by its recipe: resize factor, horizontal flip and
the padded size. Teacher caching and student training both build views through
:func:`make_view`, so the teacher sees exactly the student's pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from sadpipe.errors import UserError
from sadpipe.serialization import plain_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DETECTRON_PIXEL_MEANS = (102.9801, 115.9465, 122.7717)   # BGR, in [0, 255]
CHANNEL_ORDERS = ("rgb", "bgr")
UINT8_MAX = 255.0
NORMALIZATION_FIELDS = ("mean", "std", "channel_order", "pixel_range")


@dataclass(frozen=True)
class Preprocessing:
    """Resize so the short side is ``min_size`` unless the long side would exceed
    ``max_size``; scale pixels to [0, ``pixel_range``] in ``channel_order`` and normalise them
    with ``mean``/``std`` (given in that order and range); pad to a multiple of
    ``size_divisibility`` (the coarsest anchor stride).

    The defaults are torchvision's input (RGB in [0, 1], ImageNet mean/std). Detectron's
    models take BGR in [0, 255] minus its pixel means, std 1 (:data:`DETECTRON_PIXEL_MEANS`).
    """

    min_size: int = 600
    max_size: int = 1000
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    size_divisibility: int = 128
    channel_order: str = "rgb"
    pixel_range: float = 1.0

    def __post_init__(self):
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, "
                             f"got {self.channel_order!r}")

    def scale(self, height: int, width: int, min_size: int | None = None) -> float:
        """Resize factor of an image of (height, width): short side to ``min_size`` (or
        this preprocessing's), capped so the long side stays within ``max_size``."""
        short = self.min_size if min_size is None else min_size
        return min(short / min(height, width), self.max_size / max(height, width))

    def resized_size(self, height: int, width: int, min_size: int | None = None) -> tuple[int, int]:
        """Output (h, w) after resizing an image of (height, width)."""
        scale = self.scale(height, width, min_size)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        d = self.size_divisibility
        return math.ceil(height / d) * d, math.ceil(width / d) * d

    def with_sizes_of(self, other: "Preprocessing") -> "Preprocessing":
        """This pixel normalisation with ``other``'s sizes (a model fed another's views)."""
        return replace(self, min_size=other.min_size, max_size=other.max_size,
                       size_divisibility=other.size_divisibility)

    def same_normalization(self, other: "Preprocessing") -> bool:
        return all(getattr(self, k) == getattr(other, k) for k in NORMALIZATION_FIELDS)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """RGB pixels (..., 3, H, W) in [0, pixel_range] → the model's input."""
        if self.channel_order == "bgr":
            pixels = pixels.flip(-3)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (pixels - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`: model input (..., 3, H, W) → RGB in [0, pixel_range]."""
        pixels = x * torch.tensor(self.std).view(3, 1, 1) + torch.tensor(self.mean).view(3, 1, 1)
        return pixels.flip(-3) if self.channel_order == "bgr" else pixels

    def to_dict(self) -> dict:
        return plain_dict(self, optional=("channel_order", "pixel_range"))

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(min_size=int(d["min_size"]), max_size=int(d["max_size"]),
                   mean=tuple(float(x) for x in d["mean"]), std=tuple(float(x) for x in d["std"]),
                   size_divisibility=int(d["size_divisibility"]),
                   channel_order=str(d.get("channel_order", "rgb")),
                   pixel_range=float(d.get("pixel_range", 1.0)))


def preprocessing_from_config(cfg: dict) -> Preprocessing:
    """The test-time input of a train config (``[input]``; padding to
    ``input.size_divisibility``, by default the coarsest of ``model.strides``)."""
    input_cfg = cfg["input"]
    if input_cfg["channel_order"] not in CHANNEL_ORDERS:
        raise UserError(f"config: input.channel_order '{input_cfg['channel_order']}' is unknown "
                        f"(known: {', '.join(CHANNEL_ORDERS)})")
    if input_cfg["size_divisibility"] < 0:
        raise UserError(f"config: input.size_divisibility must be >= 0, got {input_cfg['size_divisibility']}")
    return Preprocessing(min_size=input_cfg["min_size"], max_size=input_cfg["max_size"],
                         mean=tuple(input_cfg["mean"]), std=tuple(input_cfg["std"]),
                         size_divisibility=input_cfg["size_divisibility"] or max(cfg["model"]["strides"]),
                         channel_order=input_cfg["channel_order"], pixel_range=input_cfg["pixel_range"])


def renormalize(x: torch.Tensor, source: Preprocessing, target: Preprocessing) -> torch.Tensor:
    """Input normalised for ``source`` (..., 3, H, W) → the same pixels normalised for
    ``target``."""
    pixels = source.denormalize(x)
    if source.pixel_range != target.pixel_range:
        pixels = pixels * (target.pixel_range / source.pixel_range)
    return target.normalize(pixels)


def make_recipe(prep: Preprocessing, height: int, width: int, *, flip: bool = False,
                min_size: int | None = None) -> dict:
    """How one view is made: JSON-able, stored with cached teacher scores."""
    rh, rw = prep.resized_size(height, width, min_size)
    return {"image_size": [height, width], "resized_size": [rh, rw],
            "padded_size": list(prep.padded_size(rh, rw)), "flip": bool(flip)}


def make_view(image: np.ndarray, recipe: dict, prep: Preprocessing) -> torch.Tensor:
    """Apply a recipe to an RGB uint8 image (H, W, 3). Returns the normalised, unpadded view
    (3, h, w) float32 (bilinear resize, half-pixel centres, no antialiasing)."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float()
    x = x.div_(UINT8_MAX / prep.pixel_range)
    rh, rw = recipe["resized_size"]
    if (rh, rw) != tuple(x.shape[1:]):
        x = F.interpolate(x[None], size=(rh, rw), mode="bilinear", align_corners=False)[0]
    if recipe["flip"]:
        x = x.flip(-1)
    return prep.normalize(x)


def transform_boxes(boxes: np.ndarray, recipe: dict) -> np.ndarray:
    """Map xyxy boxes (K, 4) from original image pixels into the view's pixels."""
    h, w = recipe["image_size"]
    rh, rw = recipe["resized_size"]
    out = boxes.astype(np.float32) * np.array([rw / w, rh / h, rw / w, rh / h], np.float32)
    if recipe["flip"]:
        out = np.stack([rw - out[:, 2], out[:, 1], rw - out[:, 0], out[:, 3]], axis=1)
    return out.reshape(-1, 4)


def untransform_boxes(boxes: torch.Tensor, recipe: dict) -> torch.Tensor:
    """Inverse of :func:`transform_boxes`: view pixels (K, 4) → original image pixels."""
    h, w = recipe["image_size"]
    rh, rw = recipe["resized_size"]
    if recipe["flip"]:
        boxes = torch.stack([rw - boxes[:, 2], boxes[:, 1], rw - boxes[:, 0], boxes[:, 3]], dim=1)
    ratios = torch.tensor([w / rw, h / rh, w / rw, h / rh], dtype=boxes.dtype)
    return boxes * ratios


def pad_batch(views: list[torch.Tensor], size_divisibility: int) -> torch.Tensor:
    """Stack views (3, h_i, w_i) into (N, 3, H, W), zero-padded at the bottom/right to the
    largest size rounded up to ``size_divisibility``."""
    h = max(v.shape[1] for v in views)
    w = max(v.shape[2] for v in views)
    h, w = (math.ceil(s / size_divisibility) * size_divisibility for s in (h, w))
    out = views[0].new_zeros(len(views), 3, h, w)
    for i, v in enumerate(views):
        out[i, :, : v.shape[1], : v.shape[2]] = v
    return out


def aspect_batches(sizes: list[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Indices of images of ``sizes`` (height, width) in batches of ``batch_size`` that pad
    little: ordered by aspect ratio (stable, so ties keep their order), then cut in turn.

    Images of one aspect ratio resize to one shape, so a batch of them pads nothing, where a
    batch in file order mixes landscape and portrait images and pads every view to the
    square of the longer side (on the embedded val ~1.4x the pixels). Models trained on
    mixed batches see less padding this way, which moves their outputs near the bottom and
    right edges (the zoo teacher's AP moved by more than its test's ±0.1 when eval batched so), so
    `sadpipe eval` keeps file order; `python -m sadpipe.bench.inference --aspect-order` shows
    the speed it would give."""
    order = sorted(range(len(sizes)), key=lambda i: sizes[i][0] / sizes[i][1])
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
