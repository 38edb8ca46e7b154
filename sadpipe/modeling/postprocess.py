"""Turn dense outputs into detections (score ≥ 0.05, top 1000 per level, NMS 0.5, 100/image)."""
from __future__ import annotations

import torch
from torchvision.ops import batched_nms, clip_boxes_to_image

from sadpipe.modeling.targets import box_coder

SCORE_THRESH = 0.05
TOPK_PER_LEVEL = 1000
NMS_THRESH = 0.5
DETECTIONS_PER_IMAGE = 100


def postprocess(cls_logits: torch.Tensor, box_deltas: torch.Tensor, anchors: torch.Tensor,
                level_sizes: list[int], image_size: tuple[int, int], *,
                score_thresh: float = SCORE_THRESH, topk: int = TOPK_PER_LEVEL,
                nms_thresh: float = NMS_THRESH, max_dets: int = DETECTIONS_PER_IMAGE) -> dict:
    """Detections of ONE image.

    Args:
        cls_logits: (HWA, C); box_deltas: (HWA, 4); anchors: (HWA, 4).
        level_sizes: anchors per level, summing to HWA.
        image_size: (h, w) of the resized (unpadded) view, for clipping.

    Returns dict of "boxes" (D, 4) xyxy view pixels, "scores" (D,), "labels" (D,) indices.
    """
    coder = box_coder()
    num_classes = cls_logits.shape[-1]
    boxes, scores, labels = [], [], []
    for logit, delta, anc in zip(cls_logits.split(level_sizes), box_deltas.split(level_sizes),
                                 anchors.split(level_sizes)):
        prob = torch.sigmoid(logit).flatten()
        keep = torch.nonzero(prob > score_thresh).squeeze(1)
        prob = prob[keep]
        prob, order = prob.topk(min(topk, prob.numel()))
        keep = keep[order]
        anchor_idx = keep // num_classes
        decoded = coder.decode_single(delta[anchor_idx].float(), anc[anchor_idx])
        boxes.append(clip_boxes_to_image(decoded, image_size))
        scores.append(prob)
        labels.append(keep % num_classes)
    boxes, scores, labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
    keep = batched_nms(boxes, scores, labels, nms_thresh)[:max_dets]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
