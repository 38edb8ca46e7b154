"""Anchor matching (torchvision's Matcher) and regression targets (:mod:`sadpipe.modeling.boxes`).

Per-anchor labels: ``c >= 0`` foreground class index, ``BACKGROUND`` (-1), ``IGNORE`` (-2).
"""
from __future__ import annotations

import torch
from torchvision.models.detection import _utils as det_utils

from sadpipe.modeling.boxes import BoxConvention

BACKGROUND = -1
IGNORE = -2
FG_IOU = 0.5
BG_IOU = 0.4


def match_anchors(anchors: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor, *,
                  fg_iou: float = FG_IOU, bg_iou: float = BG_IOU,
                  convention: BoxConvention = BoxConvention()) -> tuple[torch.Tensor, torch.Tensor]:
    """Assign each anchor to a ground-truth box (IoU in the box ``convention``).

    Args:
        anchors: (HWA, 4) xyxy.
        gt_boxes: (K, 4) xyxy; gt_labels: (K,) class indices in [0, C).

    Returns:
        labels: (HWA,) int64 — class of the matched box if IoU >= fg_iou, ``BACKGROUND`` if
            IoU < bg_iou, ``IGNORE`` in between; every box also keeps the anchor(s) with its
            highest IoU.
        matched_boxes: (HWA, 4) the matched box per anchor (arbitrary where not foreground).
    """
    num = anchors.shape[0]
    if gt_boxes.numel() == 0:
        return (torch.full((num,), BACKGROUND, dtype=torch.int64),
                torch.zeros_like(anchors))
    matcher = det_utils.Matcher(fg_iou, bg_iou, allow_low_quality_matches=True)
    idx = matcher(convention.iou(gt_boxes, anchors))
    labels = gt_labels[idx.clamp(min=0)].to(torch.int64)
    labels[idx == matcher.BELOW_LOW_THRESHOLD] = BACKGROUND
    labels[idx == matcher.BETWEEN_THRESHOLDS] = IGNORE
    return labels, gt_boxes[idx.clamp(min=0)]


def build_targets(anchors: torch.Tensor, targets: list[dict], *,
                  convention: BoxConvention = BoxConvention()) -> tuple[torch.Tensor, torch.Tensor]:
    """Match a batch. targets[i] holds "boxes" (K_i, 4) and "labels" (K_i,) in view pixels.

    Returns labels (N, HWA) and box regression targets (N, HWA, 4), both in the box
    ``convention`` of the model."""
    labels, deltas = [], []
    for t in targets:
        lab, boxes = match_anchors(anchors, t["boxes"], t["labels"], convention=convention)
        labels.append(lab)
        deltas.append(convention.encode(boxes, anchors))
    return torch.stack(labels), torch.stack(deltas)
