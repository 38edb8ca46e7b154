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
HEAD_INITS = ("release", "kaiming")
CLS_LOGITS = "head.classification_head.cls_logits"   # state-dict prefix of the class layer


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
        init_head_towers(self.head, ARCHS[arch].head_init)
        self.num_classes = num_classes
        self.channels_last = True  # memory layout of CPU inputs (see forward)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images: (N, 3, H, W), H and W multiples of the coarsest stride.

        Returns cls_logits (N, HWA, C) and box_deltas (N, HWA, 4), levels P3..P7 in order.

        On CPU the images are laid out channels-last, which oneDNN's convolutions then keep
        through the network (`python -m sadpipe.bench.train_step` measures the gain)."""
        if self.channels_last and images.device.type == "cpu":
            images = images.contiguous(memory_format=torch.channels_last)
        features = list(self.backbone(images).values())
        return self.head.classification_head(features), self.head.regression_head(features)


def init_head_towers(head: RetinaNetHead, scheme: str) -> None:
    """Initialise the head's conv towers (the four 3×3 convs of each branch; the final
    predictors keep torchvision's N(0, 0.01) and the class prior bias).

    ``"release"`` keeps N(0, 0.01), the release's choice for 256-channel FPNs. At 32 or 64
    channels that scale shrinks the signal ~10× per conv, so the toy archs use ``"kaiming"``:
    He-normal with fan-in and ReLU gain, which keeps the activations' scale through the tower.
    """
    if scheme not in HEAD_INITS:
        raise ValueError(f"head_init must be one of {HEAD_INITS}, got {scheme!r}")
    if scheme == "release":
        return
    for tower in (head.classification_head.conv, head.regression_head.conv):
        for module in tower.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)


def select_classes(state: dict, classes: list[int], *, num_anchors: int, num_classes: int) -> dict:
    """A copy of ``state`` whose class layer predicts, as its class c, the old class
    ``classes[c]`` (a subset, a reordering, or both).

    The layer's output channels are anchor-major (torchvision's head): channel ``a * C + k``
    is class k of anchor a, for a in [0, num_anchors) and C = ``num_classes``."""
    channels = torch.tensor([a * num_classes + k for a in range(num_anchors) for k in classes])
    out = dict(state)
    for name in ("weight", "bias"):
        out[f"{CLS_LOGITS}.{name}"] = state[f"{CLS_LOGITS}.{name}"][channels].clone()
    return out
