"""Box conventions: how a box's extent is measured, and everything that follows from it.

* ``"torchvision"``: continuous coordinates, width = x2 − x1. torchvision's ``BoxCoder``
  (weights 1, dw/dh clipped at log(1000/16)), ``box_iou`` and ``batched_nms`` (suppress
  IoU > threshold); boxes clipped to [0, W] × [0, H] of the resized view, then mapped to the
  original image; COCO results [x1, y1, x2 − x1, y2 − y1].
* ``"detectron"``: Detectron's legacy pixel-index convention (``utils/boxes.py``), in which
  the SAD release's models were trained and tested: width = x2 − x1 + 1 in decoding,
  encoding, IoU and NMS areas (decoded x2 = centre + w/2 − 1); NMS suppresses IoU ≥
  threshold; boxes are divided by the image scale, then clipped to [0, W − 1] × [0, H − 1]
  and NMSed in original image pixels (``core/test_retinanet.py``); COCO results
  [x1, y1, x2 − x1 + 1, y2 − y1 + 1].

Boxes are (K, 4) xyxy tensors throughout.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.models.detection import _utils as det_utils
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image

BOX_CONVENTIONS = ("torchvision", "detectron")
BOX_CODER_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


@dataclass(frozen=True)
class BoxConvention:
    """The box operations of one convention (see the module docstring)."""

    name: str = "torchvision"

    def __post_init__(self):
        if self.name not in BOX_CONVENTIONS:
            raise ValueError(f"box convention must be one of {BOX_CONVENTIONS}, got {self.name!r}")

    @property
    def legacy(self) -> bool:
        """Detectron's "+1" pixel convention."""
        return self.name == "detectron"

    @property
    def nms_in_image(self) -> bool:
        """Clip and NMS in original image pixels (else in the resized view's)."""
        return self.legacy

    def encode(self, boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Regression targets (K, 4) (dx, dy, dw, dh) of ``boxes`` w.r.t. ``anchors``."""
        if not self.legacy:
            return box_coder().encode_single(boxes, anchors)
        aw, ah, ax, ay = _legacy_size_centre(anchors)
        bw, bh, bx, by = _legacy_size_centre(boxes)
        return torch.stack([(bx - ax) / aw, (by - ay) / ah, torch.log(bw / aw),
                            torch.log(bh / ah)], dim=1)

    def decode(self, deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Boxes (K, 4) from regression outputs (K, 4) on ``anchors`` (K, 4)."""
        if not self.legacy:
            return box_coder().decode_single(deltas, anchors)
        w, h, cx, cy = _legacy_size_centre(anchors.to(deltas.dtype))
        dw = deltas[:, 2].clamp(max=BBOX_XFORM_CLIP)
        dh = deltas[:, 3].clamp(max=BBOX_XFORM_CLIP)
        pcx, pcy = deltas[:, 0] * w + cx, deltas[:, 1] * h + cy
        pw, ph = torch.exp(dw) * w, torch.exp(dh) * h
        return torch.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw - 1,
                            pcy + 0.5 * ph - 1], dim=1)

    def clip(self, boxes: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
        """Clip to an image of ``size_hw``: [0, W] × [0, H], or [0, W − 1] × [0, H − 1]."""
        if not self.legacy:
            return clip_boxes_to_image(boxes, size_hw)
        h, w = size_hw
        x = boxes[:, 0::2].clamp(max=w - 1).clamp(min=0)
        y = boxes[:, 1::2].clamp(max=h - 1).clamp(min=0)
        return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)

    def iou(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Pairwise IoU (Ka, Kb)."""
        return box_iou(self._extent(a), self._extent(b))

    def batched_nms(self, boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                    thresh: float) -> torch.Tensor:
        """Indices kept by greedy NMS within each ``idxs`` group, by decreasing score."""
        if not self.legacy:
            return batched_nms(boxes, scores, idxs, thresh)
        # IoU of the +1 extents; "suppress IoU >= t" is "IoU > the float32 just below t"
        below = float(np.nextafter(np.float32(thresh), np.float32(0)))
        return batched_nms(self._extent(boxes), scores, idxs, below)

    def to_xywh(self, boxes: torch.Tensor) -> torch.Tensor:
        """COCO [x, y, w, h] (K, 4)."""
        wh = boxes[:, 2:] - boxes[:, :2]
        return torch.cat([boxes[:, :2], wh + 1 if self.legacy else wh], dim=1)

    def _extent(self, boxes: torch.Tensor) -> torch.Tensor:
        """Continuous boxes covering the same pixels: x2 + 1, y2 + 1 in the legacy convention."""
        if not self.legacy:
            return boxes
        return torch.cat([boxes[:, :2], boxes[:, 2:] + 1], dim=1)


def box_coder() -> det_utils.BoxCoder:
    """torchvision's (dx, dy, dw, dh) parametrisation, unit weights as in the release."""
    return det_utils.BoxCoder(weights=BOX_CODER_WEIGHTS, bbox_xform_clip=BBOX_XFORM_CLIP)


def _legacy_size_centre(boxes: torch.Tensor):
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    return w, h, boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h
