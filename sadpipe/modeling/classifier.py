"""A small body with a classification head: how the toy bodies are pretrained."""
from __future__ import annotations

import torch
import torch.nn as nn

from sadpipe.modeling.backbones import ARCHS, build_body


class BodyClassifier(nn.Module):
    """``body`` (as under the detector's FPN) → global average pool → linear.

    Args:
        arch: a small arch of :data:`sadpipe.modeling.backbones.ARCHS`.
        num_classes: K output logits.
        norm: the body's normalisation ("bn", "gn", "frozen_bn").
    """

    def __init__(self, arch: str, num_classes: int, *, norm: str = "bn"):
        super().__init__()
        self.body = build_body(arch, norm=norm)
        self.fc = nn.Linear(ARCHS[arch].widths[-1], num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (N, 3, H, W) normalised → logits (N, K)."""
        return self.fc(self.body(images).mean(dim=(2, 3)))
