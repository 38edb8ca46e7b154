"""Turn dense outputs into detections: per level the scores above the threshold (> 0.05), the
top 1000; decode, clip, per-class NMS 0.5, the 100 best per image. Box arithmetic follows the
model's box convention (:mod:`sadpipe.modeling.boxes`)."""
from __future__ import annotations

import torch

from sadpipe.modeling.boxes import BoxConvention

SCORE_THRESH = 0.05
TOPK_PER_LEVEL = 1000
NMS_THRESH = 0.5
DETECTIONS_PER_IMAGE = 100


def postprocess(cls_logits: torch.Tensor, box_deltas: torch.Tensor, anchors: torch.Tensor,
                level_sizes: list[int], image_size: tuple[int, int], *,
                score_thresh: float = SCORE_THRESH, last_level_score_thresh: float | None = None,
                topk: int = TOPK_PER_LEVEL, nms_thresh: float = NMS_THRESH,
                max_dets: int = DETECTIONS_PER_IMAGE,
                convention: BoxConvention = BoxConvention(), box_scale: float = 1.0) -> dict:
    """Detections of ONE image.

    Args:
        cls_logits: (HWA, C); box_deltas: (HWA, 4); anchors: (HWA, 4) in view pixels.
        level_sizes: anchors per level, summing to HWA.
        image_size: (h, w) of the frame the boxes are clipped to.
        last_level_score_thresh: the coarsest level's threshold when it differs (Detectron
            keeps every score > 0 on P7).
        box_scale: decoded boxes are divided by it before clipping and NMS (1: they stay in
            view pixels; the view's resize factor: they move to original pixels).

    Returns dict of "boxes" (D, 4) xyxy in the clipping frame, "scores" (D,), "labels" (D,)
    class indices, by decreasing score.
    """
    num_classes = cls_logits.shape[-1]
    thresholds = [score_thresh] * len(level_sizes)
    if last_level_score_thresh is not None:
        thresholds[-1] = last_level_score_thresh
    scores, labels, anchor_idx = [], [], []
    start = 0
    for logit, size, thresh in zip(cls_logits.split(level_sizes), level_sizes, thresholds):
        prob = torch.sigmoid(logit).flatten()
        keep = torch.nonzero(prob > thresh).squeeze(1)
        prob, order = prob[keep].topk(min(topk, keep.numel()))
        keep = keep[order]
        scores.append(prob)
        labels.append(keep % num_classes)
        anchor_idx.append(keep // num_classes + start)
        start += size
    scores, labels, anchor_idx = torch.cat(scores), torch.cat(labels), torch.cat(anchor_idx)
    boxes = convention.decode(box_deltas[anchor_idx].float(), anchors[anchor_idx])  # all levels at once
    if box_scale != 1.0:
        boxes = boxes / box_scale
    boxes = convention.clip(boxes, image_size)
    keep = convention.batched_nms(boxes, scores, labels, nms_thresh)[:max_dets]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
