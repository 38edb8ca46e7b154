"""RetinaNet: backbone + FPN (P3–P7) and torchvision's RetinaNet head.

The network maps a padded batch to dense per-anchor outputs; matching, losses and
post-processing live in their own modules.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torchvision.models.detection.retinanet import RetinaNetHead

from sadpipe.modeling.anchors import AnchorLayout
from sadpipe.modeling.backbones import ARCHS, build_backbone

HEAD_GN_GROUPS = 8


class RetinaNet(nn.Module):
    """Dense one-stage detector.

    Args:
        arch: backbone name in :data:`sadpipe.modeling.backbones.ARCHS`.
        num_classes: C, foreground classes (no background logit: sigmoid per class).
        anchor_layout: where the A anchors per location sit on each level.
        pretrained: load torchvision ImageNet weights into the body (downloads).
        norm: "bn", "gn" or "frozen_bn" for the small bodies (paper bodies: frozen BN);
            "affine": frozen BN with eps 0 (Detectron's AffineChannel).
        stride_in_1x1, p6_from: body and FPN variant (see
            :func:`sadpipe.modeling.backbones.build_backbone`).
    """

    def __init__(self, arch: str, num_classes: int, anchor_layout: AnchorLayout | None = None,
                 *, pretrained: bool = False, norm: str = "bn", stride_in_1x1: bool = False,
                 p6_from: str = "p5"):
        super().__init__()
        self.anchor_layout = anchor_layout or AnchorLayout()
        self.backbone = build_backbone(arch, pretrained=pretrained, norm=norm,
                                       stride_in_1x1=stride_in_1x1, p6_from=p6_from)
        head_norm = (lambda c: nn.GroupNorm(HEAD_GN_GROUPS, c)) if ARCHS[arch].head_norm else None
        self.head = RetinaNetHead(self.backbone.out_channels, self.anchor_layout.num_anchors,
                                  num_classes, norm_layer=head_norm)
        self.num_classes = num_classes

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images: (N, 3, H, W), H and W multiples of the coarsest stride.

        Returns cls_logits (N, HWA, C) and box_deltas (N, HWA, 4), levels P3..P7 in order."""
        features = list(self.backbone(images).values())
        return self.head.classification_head(features), self.head.regression_head(features)
