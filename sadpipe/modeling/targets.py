"""Anchor matching (torchvision's Matcher) and regression targets (:mod:`sadpipe.modeling.boxes`).

Per-anchor labels: ``c >= 0`` foreground class index, ``BACKGROUND`` (-1), ``IGNORE`` (-2).
Crowd regions (COCO ``iscrowd`` boxes) are not matched; background anchors lying mostly
inside one are ignored rather than trained as background.
"""
from __future__ import annotations

import torch
from torchvision.models.detection import _utils as det_utils

from sadpipe.modeling.boxes import BoxConvention

BACKGROUND = -1
IGNORE = -2
FG_IOU = 0.5
BG_IOU = 0.4
CROWD_IGNORE_IOF = 0.7


def match_anchors(anchors: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor, *,
                  crowd_boxes: torch.Tensor | None = None, fg_iou: float = FG_IOU,
                  bg_iou: float = BG_IOU,
                  convention: BoxConvention = BoxConvention()) -> tuple[torch.Tensor, torch.Tensor]:
    """Assign each anchor to a ground-truth box (IoU in the box ``convention``).

    Args:
        anchors: (HWA, 4) xyxy.
        gt_boxes: (K, 4) xyxy; gt_labels: (K,) class indices in [0, C).
        crowd_boxes: (M, 4) xyxy crowd regions, or None.

    Returns:
        labels: (HWA,) int64 — class of the matched box if IoU >= fg_iou, ``BACKGROUND`` if
            IoU < bg_iou, ``IGNORE`` in between; every box also keeps the anchor(s) with its
            highest IoU; background anchors covered ≥ ``CROWD_IGNORE_IOF`` by a crowd region
            are ``IGNORE``.
        matched_boxes: (HWA, 4) the matched box per anchor (arbitrary where not foreground).
    """
    num = anchors.shape[0]
    if gt_boxes.numel() == 0:
        labels, matched = (torch.full((num,), BACKGROUND, dtype=torch.int64, device=anchors.device),
                           torch.zeros_like(anchors))
    else:
        matcher = det_utils.Matcher(fg_iou, bg_iou, allow_low_quality_matches=True)
        idx = matcher(convention.iou(gt_boxes, anchors))
        labels = gt_labels[idx.clamp(min=0)].to(torch.int64)
        labels[idx == matcher.BELOW_LOW_THRESHOLD] = BACKGROUND
        labels[idx == matcher.BETWEEN_THRESHOLDS] = IGNORE
        matched = gt_boxes[idx.clamp(min=0)]
    if crowd_boxes is not None and crowd_boxes.numel():
        in_crowd = crowd_coverage(anchors, crowd_boxes) >= CROWD_IGNORE_IOF
        labels[(labels == BACKGROUND) & in_crowd] = IGNORE
    return labels, matched


def crowd_coverage(anchors: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """(HWA,) the largest fraction of each anchor's area that one of ``regions`` (M, 4)
    covers (intersection over the anchor's area, "IoF"); anchors (HWA, 4). Both xyxy."""
    top_left = torch.maximum(anchors[:, None, :2], regions[None, :, :2])
    bottom_right = torch.minimum(anchors[:, None, 2:], regions[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)          # (HWA, M)
    area = (anchors[:, 2:] - anchors[:, :2]).prod(dim=1).clamp(min=1e-6)
    return (inter / area[:, None]).amax(dim=1)


def build_targets(anchors: torch.Tensor, targets: list[dict], *,
                  convention: BoxConvention = BoxConvention()) -> tuple[torch.Tensor, torch.Tensor]:
    """Match a batch. targets[i] holds "boxes" (K_i, 4), "labels" (K_i,) and optionally
    "crowd_boxes" (M_i, 4), in view pixels.

    Returns labels (N, HWA) and box regression targets (N, HWA, 4), both in the box
    ``convention`` of the model."""
    labels, deltas = [], []
    for t in targets:
        lab, boxes = match_anchors(anchors, t["boxes"], t["labels"],
                                   crowd_boxes=t.get("crowd_boxes"), convention=convention)
        labels.append(lab)
        deltas.append(convention.encode(boxes, anchors))
    return torch.stack(labels), torch.stack(deltas)
