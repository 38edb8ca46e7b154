"""Turn torchvision's ``retinanet_resnet50_fpn`` weights into a sadpipe checkpoint.

torchvision's COCO RetinaNet predicts 91 "classes" indexed by COCO category id (index 0 and
the ids COCO never used are placeholders). The classification layer's output channels are
laid out anchor-major, ``a * 91 + k``; the import keeps the channels of the 80 real
categories, in id order, so the imported model's scores equal torchvision's for them.
"""
from __future__ import annotations

import torch
from torchvision.models.detection import RetinaNet_ResNet50_FPN_Weights

from sadpipe.checkpoint import ModelSpec
from sadpipe.data.transforms import Preprocessing
from sadpipe.modeling.anchors import AnchorLayout

TORCHVISION_NUM_CLASSES = 91
PLACEHOLDER_NAMES = ("__background__", "N/A")
CLS_LOGITS = "head.classification_head.cls_logits"
TORCHVISION_MIN_SIZE, TORCHVISION_MAX_SIZE = 800, 1333


def coco_categories() -> list[tuple[int, str]]:
    """(category id, name) of the 80 real COCO categories, from torchvision's metadata."""
    names = RetinaNet_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
    return [(i, n) for i, n in enumerate(names) if n not in PLACEHOLDER_NAMES]


def convert_state_dict(state: dict, keep: list[int], *, num_anchors: int = 9,
                       num_classes: int = TORCHVISION_NUM_CLASSES) -> dict:
    """Slice the classification layer to the ``keep`` class indices; drop BN counters."""
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    weight, bias = state[f"{CLS_LOGITS}.weight"], state[f"{CLS_LOGITS}.bias"]
    channels = torch.tensor([a * num_classes + k for a in range(num_anchors) for k in keep])
    state[f"{CLS_LOGITS}.weight"] = weight[channels].clone()
    state[f"{CLS_LOGITS}.bias"] = bias[channels].clone()
    return state


def import_retinanet_resnet50(state: dict, *, min_size: int = TORCHVISION_MIN_SIZE,
                              max_size: int = TORCHVISION_MAX_SIZE) -> tuple[ModelSpec, dict]:
    """Returns the sadpipe model spec and the converted state dict (strictly loadable)."""
    categories = coco_categories()
    spec = ModelSpec(arch="resnet50", categories=tuple(categories), anchor_layout=AnchorLayout(),
                     preprocessing=Preprocessing(min_size=min_size, max_size=max_size))
    converted = convert_state_dict(state, [cid for cid, _ in categories])
    return spec, converted
