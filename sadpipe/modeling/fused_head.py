"""An inference copy of torchvision's RetinaNet head with its two towers run as one.

The classification and the box tower each apply four 3×3 convs (+ GroupNorm, + ReLU) to the
same FPN level. Concatenating the first convs' filters gives one conv with twice the
outputs, and each later pair is one grouped conv (``groups=2``: the first half of the
channels is the class tower, the second the box tower); the two predictors then read their
halves. Every output is computed from the same inputs and filters as before, so the outputs
equal the head's up to float rounding, with half the per-level calls: at the toy sizes on the
CPU the calls, not the arithmetic, are what the smaller heads spend
(``python -m sadpipe.bench.inference --no-fuse-head`` against the default).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.retinanet import RetinaNetHead

TOWERS = 2   # class tower, box tower


class FusedRetinaNetHead(nn.Module):
    """Drop-in inference replacement of a ``RetinaNetHead`` (same call, same outputs).

    Args:
        head: the trained head; its parameters are copied, not shared.
    """

    def __init__(self, head: RetinaNetHead):
        super().__init__()
        cls_head, box_head = head.classification_head, head.regression_head
        self.num_classes = cls_head.num_classes
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i, (cls_block, box_block) in enumerate(zip(cls_head.conv, box_head.conv)):
            cls_conv, box_conv = cls_block[0], box_block[0]
            conv = nn.Conv2d(cls_conv.in_channels * (1 if i == 0 else TOWERS), TOWERS * cls_conv.out_channels,
                             kernel_size=cls_conv.kernel_size, padding=cls_conv.padding,
                             groups=1 if i == 0 else TOWERS, bias=cls_conv.bias is not None)
            with torch.no_grad():
                conv.weight.copy_(torch.cat([cls_conv.weight, box_conv.weight]))
                if conv.bias is not None:
                    conv.bias.copy_(torch.cat([cls_conv.bias, box_conv.bias]))
            self.convs.append(conv)
            self.norms.append(_fused_group_norm(cls_block[1], box_block[1]))
        self.cls_logits = _copy_conv(cls_head.cls_logits)
        self.bbox_reg = _copy_conv(box_head.bbox_reg)
        self.to(cls_head.cls_logits.weight.device, cls_head.cls_logits.weight.dtype)

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """features: per level (N, F, H_l, W_l). Returns "cls_logits" (N, HWA, C) and
        "bbox_regression" (N, HWA, 4), levels in order, as ``RetinaNetHead`` does."""
        cls_logits, box_deltas = [], []
        for x in features:
            for conv, norm in zip(self.convs, self.norms):
                x = F.relu(norm(conv(x)))
            cls_x, box_x = x.chunk(TOWERS, dim=1)
            cls_logits.append(_per_anchor(self.cls_logits(cls_x), self.num_classes))
            box_deltas.append(_per_anchor(self.bbox_reg(box_x), 4))
        return {"cls_logits": torch.cat(cls_logits, dim=1), "bbox_regression": torch.cat(box_deltas, dim=1)}


def _per_anchor(out: torch.Tensor, width: int) -> torch.Tensor:
    """(N, A·width, H, W) → (N, HWA, width), anchors fastest within a location."""
    n, _, h, w = out.shape
    return out.view(n, -1, width, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, width)


def _copy_conv(conv: nn.Conv2d) -> nn.Conv2d:
    copy = nn.Conv2d(conv.in_channels, conv.out_channels, kernel_size=conv.kernel_size,
                     padding=conv.padding, bias=conv.bias is not None)
    copy.load_state_dict(conv.state_dict())
    return copy


def _fused_group_norm(cls_norm: nn.Module, box_norm: nn.Module) -> nn.Module:
    """The towers' norms side by side: ``Identity`` (torchvision's default head has none) or
    one GroupNorm with both towers' groups (a group never spans the two halves)."""
    if isinstance(cls_norm, nn.ReLU):   # no norm: the block is conv, ReLU
        return nn.Identity()
    if not isinstance(cls_norm, nn.GroupNorm):
        raise TypeError(f"cannot fuse a head tower normalised by {type(cls_norm).__name__}")
    norm = nn.GroupNorm(TOWERS * cls_norm.num_groups, TOWERS * cls_norm.num_channels, eps=cls_norm.eps,
                        affine=cls_norm.affine)
    if cls_norm.affine:
        with torch.no_grad():
            norm.weight.copy_(torch.cat([cls_norm.weight, box_norm.weight]))
            norm.bias.copy_(torch.cat([cls_norm.bias, box_norm.bias]))
    return norm


def fuse_head(model: nn.Module) -> nn.Module:
    """In place: a RetinaNet ``model``'s head becomes its :class:`FusedRetinaNetHead`
    (inference only: the fused head has none of the training head's loss methods). Returns
    ``model``."""
    model.head = FusedRetinaNetHead(model.head).eval()
    return model
