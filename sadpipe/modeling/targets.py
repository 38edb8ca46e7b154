"""Anchor matching (torchvision's Matcher) and regression targets (:mod:`sadpipe.modeling.boxes`).

Per-anchor labels: ``c >= 0`` foreground class index, ``BACKGROUND`` (-1), ``IGNORE`` (-2)
(the codes of :mod:`cuda_ops.constants`, which the losses read).
Crowd regions (COCO ``iscrowd`` boxes) are not matched; background anchors lying mostly
inside one are ignored rather than trained as background.
"""
from __future__ import annotations

import torch
from torchvision.models.detection import _utils as det_utils

from cuda_ops.constants import BACKGROUND, IGNORE
from sadpipe.modeling.boxes import BoxConvention

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

    The same labels and targets as :func:`match_anchors` image by image, computed for the
    whole batch at once (boxes padded to the batch's largest K): a few dozen tensor ops per
    batch instead of per image, which matters at the toy models' sizes.

    Returns labels (N, HWA) and box regression targets (N, HWA, 4), both in the box
    ``convention`` of the model."""
    num = anchors.shape[0]
    boxes, valid = _padded([t["boxes"] for t in targets], anchors)
    classes, _ = _padded([t["labels"][:, None] for t in targets], anchors, fill=0)
    iou = _batched_iou(boxes, anchors, convention)                       # (N, K, HWA)
    iou = torch.where(valid[:, :, None], iou, torch.full_like(iou, -1.0))
    labels = torch.full((len(targets), num), BACKGROUND, dtype=torch.int64, device=anchors.device)
    matched = torch.zeros(len(targets), num, 4, dtype=anchors.dtype, device=anchors.device)
    if boxes.shape[1]:
        best, index = iou.max(dim=1)                                      # (N, HWA)
        foreground = best >= FG_IOU
        labels[(best >= BG_IOU) & ~foreground] = IGNORE
        # each box keeps the anchors of its highest IoU (torchvision's low-quality matches)
        highest = iou.amax(dim=2, keepdim=True)                           # (N, K, 1)
        keeps = ((iou == highest) & valid[:, :, None]).any(dim=1)
        foreground |= keeps
        picked = classes[..., 0].gather(1, index)
        labels = torch.where(foreground, picked.to(torch.int64), labels)
        matched = boxes.gather(1, index[..., None].expand(-1, -1, 4))
    crowd, crowd_valid = _padded([t.get("crowd_boxes", anchors.new_zeros(0, 4)) for t in targets],
                                 anchors)
    if crowd.shape[1]:
        coverage = _batched_coverage(anchors, crowd, crowd_valid)         # (N, HWA)
        labels[(labels == BACKGROUND) & (coverage >= CROWD_IGNORE_IOF)] = IGNORE
    deltas = convention.encode(matched.reshape(-1, 4), anchors.repeat(len(targets), 1))
    return labels, deltas.reshape(len(targets), num, 4)


def _padded(tensors: list[torch.Tensor], like: torch.Tensor, *, fill: float = 0.0):
    """Stack (K_i, D) tensors into (N, K, D), K = max K_i, and the (N, K) mask of real rows."""
    k = max((t.shape[0] for t in tensors), default=0)
    width = tensors[0].shape[1] if tensors else 4
    out = like.new_full((len(tensors), k, width), fill, dtype=tensors[0].dtype if tensors else like.dtype)
    valid = torch.zeros(len(tensors), k, dtype=torch.bool, device=like.device)
    for i, t in enumerate(tensors):
        out[i, :t.shape[0]] = t
        valid[i, :t.shape[0]] = True
    return out, valid


def _batched_iou(boxes: torch.Tensor, anchors: torch.Tensor, convention: BoxConvention) -> torch.Tensor:
    """IoU (N, K, HWA) of boxes (N, K, 4) with anchors (HWA, 4), in the box convention."""
    n, k = boxes.shape[:2]
    return convention.iou(boxes.reshape(-1, 4), anchors).reshape(n, k, -1)


def _batched_coverage(anchors: torch.Tensor, regions: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(N, HWA): per image, the largest fraction of each anchor covered by one of its crowd
    regions (N, M, 4) (padding rows: ``valid`` False)."""
    top_left = torch.maximum(anchors[None, :, None, :2], regions[:, None, :, :2])
    bottom_right = torch.minimum(anchors[None, :, None, 2:], regions[:, None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=3)         # (N, HWA, M)
    area = (anchors[:, 2:] - anchors[:, :2]).prod(dim=1).clamp(min=1e-6)
    cover = inter / area[None, :, None]
    return torch.where(valid[:, None, :], cover, torch.zeros_like(cover)).amax(dim=2)
