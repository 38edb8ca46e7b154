"""Anchor layout of a RetinaNet: A anchors per location on pyramid levels P3–P7.

Conventions follow torchvision's ``AnchorGenerator`` (so torchvision's COCO RetinaNet imports
with identical outputs): per level, sizes ``int(base * 2 ** (k / scales_per_octave))`` for
``k < scales_per_octave`` with ``base = size_factor * stride``; per location the A = 9 base
anchors are enumerated aspect-ratio-major, size-minor, rounded to whole pixels and centred
on ``(x * stride, y * stride)``; locations are flattened row-major, so the flat index of an
anchor is ``(y * W + x) * A + a`` within its level, levels concatenated from P3 to P7.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

PAPER_STRIDES = (8, 16, 32, 64, 128)
PAPER_ASPECT_RATIOS = (0.5, 1.0, 2.0)


@dataclass(frozen=True)
class AnchorLayout:
    """Where the anchors are, for any padded input size.

    Args:
        strides: stride of each pyramid level (P3..P7).
        size_factor: anchor base size = size_factor × stride (4 in the paper).
        scales_per_octave: anchor sizes per level (3 in the paper).
        aspect_ratios: height / width ratios (0.5, 1, 2 in the paper).
    """

    strides: tuple[int, ...] = PAPER_STRIDES
    size_factor: float = 4.0
    scales_per_octave: int = 3
    aspect_ratios: tuple[float, ...] = PAPER_ASPECT_RATIOS

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
        """Base anchors (A, 4) xyxy centred on the origin for one level, rounded like
        torchvision."""
        scales = torch.tensor(self.sizes()[level], dtype=torch.float32)
        ratios = torch.tensor(self.aspect_ratios, dtype=torch.float32)
        h_ratios = torch.sqrt(ratios)
        w_ratios = 1.0 / h_ratios
        ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
        hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
        return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()

    def anchors(self, padded_hw: tuple[int, int]) -> torch.Tensor:
        """All anchors (HWA, 4) xyxy in input pixels, levels concatenated P3..P7."""
        out = []
        for level, ((gh, gw), stride) in enumerate(zip(self.grid_sizes(padded_hw), self.strides)):
            ys = torch.arange(gh, dtype=torch.float32) * stride
            xs = torch.arange(gw, dtype=torch.float32) * stride
            yy, xx = torch.meshgrid(ys, xs, indexing="ij")
            shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
            out.append((shifts + self.cell_anchors(level)[None]).reshape(-1, 4))
        return torch.cat(out)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "AnchorLayout":
        return cls(strides=tuple(int(s) for s in d["strides"]),
                   size_factor=float(d["size_factor"]),
                   scales_per_octave=int(d["scales_per_octave"]),
                   aspect_ratios=tuple(float(r) for r in d["aspect_ratios"]))
