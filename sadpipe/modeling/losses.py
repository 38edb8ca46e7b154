"""Detection losses: sigmoid focal loss (through ``cuda_ops``) and smooth-L1 box loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F

import cuda_ops
from cuda_ops.constants import FOCAL_ALPHA, FOCAL_GAMMA, SMOOTH_L1_BETA


def detection_losses(cls_logits: torch.Tensor, box_deltas: torch.Tensor, labels: torch.Tensor,
                     box_targets: torch.Tensor, *, alpha: float = FOCAL_ALPHA,
                     gamma: float = FOCAL_GAMMA, beta: float = SMOOTH_L1_BETA,
                     backend: str = "auto") -> dict[str, torch.Tensor]:
    """Focal + box loss of a batch, both normalised by max(#foreground anchors, 1).

    Args:
        cls_logits: (N, HWA, C); box_deltas: (N, HWA, 4).
        labels: (N, HWA) int64 — class, -1 background, -2 ignored.
        box_targets: (N, HWA, 4) encoded regression targets.
    """
    num_classes = cls_logits.shape[-1]
    fg = labels >= 0
    num_fg = max(int(fg.sum()), 1)
    focal = cuda_ops.sigmoid_focal_loss(cls_logits.reshape(-1, num_classes).float(), labels.reshape(-1),
                                        alpha=alpha, gamma=gamma, normalizer=float(num_fg),
                                        backend=backend)
    box = F.smooth_l1_loss(box_deltas[fg].float(), box_targets[fg], beta=beta, reduction="sum") / num_fg
    return {"loss_cls": focal, "loss_box": box}
