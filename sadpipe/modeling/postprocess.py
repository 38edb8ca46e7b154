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
                level_sizes: list[int], image_size: tuple[int, int], *, box_scale: float = 1.0,
                **options) -> dict:
    """Detections of ONE image: :func:`postprocess_batch` of a batch of one.

    Args:
        cls_logits: (HWA, C); box_deltas: (HWA, 4); anchors: (HWA, 4) in view pixels.
        image_size: (h, w) of the frame the boxes are clipped to; box_scale: see
            :func:`postprocess_batch`, as are the ``options``.
    """
    return postprocess_batch(cls_logits[None], box_deltas[None], anchors, level_sizes,
                             [image_size], box_scales=[box_scale], **options)[0]


def postprocess_batch(cls_logits: torch.Tensor, box_deltas: torch.Tensor, anchors: torch.Tensor,
                      level_sizes: list[int], image_sizes: list[tuple[int, int]], *,
                      box_scales: list[float] | None = None, score_thresh: float = SCORE_THRESH,
                      last_level_score_thresh: float | None = None, topk: int = TOPK_PER_LEVEL,
                      nms_thresh: float = NMS_THRESH, max_dets: int = DETECTIONS_PER_IMAGE,
                      convention: BoxConvention = BoxConvention()) -> list[dict]:
    """Detections of each image of a batch.

    The scores of the whole batch are thresholded in one pass (at the toy sizes per-image,
    per-level calls cost more than the arithmetic); the top ``topk`` per image and level,
    decoding, clipping and per-class NMS then give what one image alone would.

    Args:
        cls_logits: (N, HWA, C); box_deltas: (N, HWA, 4); anchors: (HWA, 4) in view pixels,
            shared by the batch (one padded size).
        level_sizes: anchors per level, summing to HWA.
        image_sizes: per image, (h, w) of the frame its boxes are clipped to.
        box_scales: per image, decoded boxes are divided by it before clipping and NMS (1:
            they stay in view pixels; the view's resize factor: they move to original pixels).
        last_level_score_thresh: the coarsest level's threshold when it differs (Detectron
            keeps every score > 0 on P7).

    Returns per image a dict of "boxes" (D, 4) xyxy in its clipping frame, "scores" (D,),
    "labels" (D,) class indices, by decreasing score.
    """
    n = cls_logits.shape[0]
    thresholds = [score_thresh] * len(level_sizes)
    if last_level_score_thresh is not None:
        thresholds[-1] = last_level_score_thresh
    sizes = torch.tensor(level_sizes, device=cls_logits.device)
    anchor_level = torch.repeat_interleave(torch.arange(len(level_sizes), device=cls_logits.device), sizes)
    anchor_thresh = torch.tensor(thresholds, dtype=cls_logits.dtype, device=cls_logits.device)[anchor_level]
    prob = torch.sigmoid(cls_logits)
    image, anchor, label = torch.nonzero(prob > anchor_thresh[None, :, None], as_tuple=True)
    scores = prob[image, anchor, label]
    # order: image, level, decreasing score; keep the first topk of each (image, level)
    group = image * len(level_sizes) + anchor_level[anchor]
    order = torch.argsort(scores, descending=True, stable=True)
    order = order[torch.argsort(group[order], stable=True)]
    group = group[order]
    group_start = torch.searchsorted(group, group, side="left")
    order = order[torch.arange(len(order), device=order.device) - group_start < topk]
    image, anchor, label, scores = image[order], anchor[order], label[order], scores[order]
    boxes = convention.decode(box_deltas[image, anchor].float(), anchors[anchor])
    per_image = torch.bincount(image, minlength=n).tolist()
    out = []
    for i, (boxes_i, scores_i, labels_i) in enumerate(zip(boxes.split(per_image), scores.split(per_image),
                                                          label.split(per_image))):
        if box_scales is not None and box_scales[i] != 1.0:
            boxes_i = boxes_i / box_scales[i]
        boxes_i = convention.clip(boxes_i, image_sizes[i])
        keep = convention.batched_nms(boxes_i, scores_i, labels_i, nms_thresh)[:max_dets]
        out.append({"boxes": boxes_i[keep], "scores": scores_i[keep], "labels": labels_i[keep]})
    return out
