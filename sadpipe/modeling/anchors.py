"""Anchor layout of a RetinaNet: A anchors per location on pyramid levels P3–P7.

Locations are flattened row-major, so the flat index of an anchor is ``(y * W + x) * A + a``
within its level, levels concatenated from P3 to P7. The A base anchors of a location follow
one of two conventions:

* ``"torchvision"`` (``AnchorGenerator``, so torchvision's COCO RetinaNet imports with
  identical outputs): sizes ``int(base * 2 ** (k / scales_per_octave))`` for
  ``k < scales_per_octave`` with ``base = size_factor * stride``; enumerated
  aspect-ratio-major, size-minor; rounded to whole pixels and centred on
  ``(x * stride, y * stride)``.
* ``"detectron"`` (Detectron's ``generate_anchors``, the SAD release): enumerated
  octave-major, ``a = octave * len(aspect_ratios) + ratio index``; size
  ``base * 2 ** (octave / scales_per_octave)`` (not truncated); legacy pixel boxes: the
  window ``[0, 0, stride - 1, stride - 1]`` is reshaped to each ratio with whole-pixel sides
  (``w = round(sqrt(stride² / r))``, ``h = round(w · r)``, numpy's round half to even), scaled
  to the size and spans ``centre ± (side - 1) / 2`` around ``((stride - 1) / 2`` shifted by
  ``(x * stride, y * stride))``.

Aspect ratios are height / width in both.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from sadpipe.serialization import plain_dict

PAPER_STRIDES = (8, 16, 32, 64, 128)
PAPER_ASPECT_RATIOS = (0.5, 1.0, 2.0)
DETECTRON_ASPECT_RATIOS = (1.0, 2.0, 0.5)   # the order of the release's configs
ANCHOR_CONVENTIONS = ("torchvision", "detectron")


@dataclass(frozen=True)
class AnchorLayout:
    """Where the anchors are, for any padded input size.

    Args:
        strides: stride of each pyramid level (P3..P7).
        size_factor: anchor base size = size_factor × stride (4 in the paper).
        scales_per_octave: anchor sizes per level (3 in the paper).
        aspect_ratios: height / width ratios (0.5, 1, 2 in the paper), in anchor order.
        convention: "torchvision" or "detectron" (see the module docstring).
    """

    strides: tuple[int, ...] = PAPER_STRIDES
    size_factor: float = 4.0
    scales_per_octave: int = 3
    aspect_ratios: tuple[float, ...] = PAPER_ASPECT_RATIOS
    convention: str = "torchvision"

    def __post_init__(self):
        if self.convention not in ANCHOR_CONVENTIONS:
            raise ValueError(f"anchor convention must be one of {ANCHOR_CONVENTIONS}, "
                             f"got {self.convention!r}")

    @property
    def num_anchors(self) -> int:
        """A: anchors per location."""
        return self.scales_per_octave * len(self.aspect_ratios)

    @property
    def size_divisibility(self) -> int:
        """Padded inputs are multiples of the coarsest stride, so every grid is exact."""
        return max(self.strides)

    def sizes(self) -> list[tuple[int, ...]]:
        """Anchor sizes (square side in pixels) per level."""
        return [
            tuple(int(self.size_factor * s * 2 ** (k / self.scales_per_octave))
                  for k in range(self.scales_per_octave))
            for s in self.strides
        ]

    def grid_sizes(self, padded_hw: tuple[int, int]) -> list[tuple[int, int]]:
        """Feature-map size (H_l, W_l) per level for a padded input of size ``padded_hw``."""
        h, w = padded_hw
        return [(math.ceil(h / s), math.ceil(w / s)) for s in self.strides]

    def level_sizes(self, padded_hw: tuple[int, int]) -> list[int]:
        """Number of anchors H_l × W_l × A per level."""
        return [gh * gw * self.num_anchors for gh, gw in self.grid_sizes(padded_hw)]

    def cell_anchors(self, level: int) -> torch.Tensor:
        """Base anchors (A, 4) xyxy of one level, around the location (0, 0)."""
        if self.convention == "detectron":
            return torch.from_numpy(self._detectron_cell_anchors(self.strides[level]))
        return self._torchvision_cell_anchors(level)

    def _torchvision_cell_anchors(self, level: int) -> torch.Tensor:
        scales = torch.tensor(self.sizes()[level], dtype=torch.float32)
        ratios = torch.tensor(self.aspect_ratios, dtype=torch.float32)
        h_ratios = torch.sqrt(ratios)
        w_ratios = 1.0 / h_ratios
        ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
        hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
        return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()

    def _detectron_cell_anchors(self, stride: int) -> np.ndarray:
        """(A, 4) float64, octave-major, in Detectron's legacy pixel convention."""
        centre = (stride - 1) / 2
        out = []
        for octave in range(self.scales_per_octave):
            # products in Detectron's order, so every value rounds as there
            scale = stride * 2 ** (octave / self.scales_per_octave) * self.size_factor / stride
            for ratio in self.aspect_ratios:
                w = np.round(np.sqrt(stride * stride / ratio))
                h = np.round(w * ratio)
                w, h = w * scale, h * scale
                out.append([centre - (w - 1) / 2, centre - (h - 1) / 2,
                            centre + (w - 1) / 2, centre + (h - 1) / 2])
        return np.array(out, dtype=np.float64)

    def anchors(self, padded_hw: tuple[int, int]) -> torch.Tensor:
        """All anchors (HWA, 4) xyxy float32 in input pixels, levels concatenated P3..P7
        (summed in float64, so non-integer base anchors round once)."""
        out = []
        for level, ((gh, gw), stride) in enumerate(zip(self.grid_sizes(padded_hw), self.strides)):
            ys = torch.arange(gh, dtype=torch.float64) * stride
            xs = torch.arange(gw, dtype=torch.float64) * stride
            yy, xx = torch.meshgrid(ys, xs, indexing="ij")
            shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
            cell = self.cell_anchors(level).double()
            out.append((shifts + cell[None]).reshape(-1, 4).float())
        return torch.cat(out)

    def to_dict(self) -> dict:
        return plain_dict(self, optional=("convention",))

    @classmethod
    def from_dict(cls, d: dict) -> "AnchorLayout":
        return cls(strides=tuple(int(s) for s in d["strides"]),
                   size_factor=float(d["size_factor"]),
                   scales_per_octave=int(d["scales_per_octave"]),
                   aspect_ratios=tuple(float(r) for r in d["aspect_ratios"]),
                   convention=str(d.get("convention", "torchvision")))
