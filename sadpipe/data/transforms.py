"""Input preprocessing shared by training, teacher inference and evaluation.

A *view* of an image is fully described by its recipe: resize factor, horizontal flip and
the padded size. Teacher caching and student training both build views through
:func:`make_view`, so the teacher sees exactly the student's pixels.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """Resize so the short side is ``min_size`` unless the long side would exceed
    ``max_size``; normalise RGB in [0, 1] with ``mean``/``std``; pad to a multiple of
    ``size_divisibility`` (the coarsest anchor stride)."""

    min_size: int = 600
    max_size: int = 1000
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    size_divisibility: int = 128

    def resized_size(self, height: int, width: int, min_size: int | None = None) -> tuple[int, int]:
        """Output (h, w) after resizing an image of (height, width)."""
        short = self.min_size if min_size is None else min_size
        scale = min(short / min(height, width), self.max_size / max(height, width))
        return max(1, round(height * scale)), max(1, round(width * scale))

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        d = self.size_divisibility
        return math.ceil(height / d) * d, math.ceil(width / d) * d

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(min_size=int(d["min_size"]), max_size=int(d["max_size"]),
                   mean=tuple(float(x) for x in d["mean"]), std=tuple(float(x) for x in d["std"]),
                   size_divisibility=int(d["size_divisibility"]))


def make_recipe(prep: Preprocessing, height: int, width: int, *, flip: bool = False,
                min_size: int | None = None) -> dict:
    """How one view is made: JSON-able, stored with cached teacher scores."""
    rh, rw = prep.resized_size(height, width, min_size)
    return {"image_size": [height, width], "resized_size": [rh, rw],
            "padded_size": list(prep.padded_size(rh, rw)), "flip": bool(flip)}


def make_view(image: np.ndarray, recipe: dict, prep: Preprocessing) -> torch.Tensor:
    """Apply a recipe to an RGB uint8 image (H, W, 3). Returns the normalised, unpadded view
    (3, h, w) float32."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)
    rh, rw = recipe["resized_size"]
    if (rh, rw) != tuple(x.shape[1:]):
        x = F.interpolate(x[None], size=(rh, rw), mode="bilinear", align_corners=False)[0]
    if recipe["flip"]:
        x = x.flip(-1)
    mean = torch.tensor(prep.mean).view(3, 1, 1)
    std = torch.tensor(prep.std).view(3, 1, 1)
    return (x - mean) / std


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
