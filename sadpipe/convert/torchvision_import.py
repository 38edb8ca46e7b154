"""Turn torchvision's ``retinanet_resnet50_fpn`` weights into a sadpipe checkpoint.

torchvision's COCO RetinaNet predicts 91 "classes" indexed by COCO category id (index 0 and
the ids COCO never used are placeholders). The classification layer's output channels are
laid out anchor-major, ``a * 91 + k``; the import keeps the channels of the 80 real
categories in class-index order (by id, :mod:`sadpipe.data.categories`), so the imported
model's scores equal torchvision's for them.
"""
from __future__ import annotations

from torchvision.models.detection import RetinaNet_ResNet50_FPN_Weights

from sadpipe.data.categories import class_order
from sadpipe.data.transforms import Preprocessing
from sadpipe.modeling.anchors import AnchorLayout
from sadpipe.modeling.retinanet import select_classes
from sadpipe.modeling.spec import ModelSpec

TORCHVISION_NUM_CLASSES = 91
PLACEHOLDER_NAMES = ("__background__", "N/A")
TORCHVISION_MIN_SIZE, TORCHVISION_MAX_SIZE = 800, 1333


def coco_categories() -> list[tuple[int, str]]:
    """(category id, name) of the 80 real COCO categories, from torchvision's metadata."""
    names = RetinaNet_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
    return [(i, n) for i, n in enumerate(names) if n not in PLACEHOLDER_NAMES]


def convert_state_dict(state: dict, keep: list[int], *, num_anchors: int = 9,
                       num_classes: int = TORCHVISION_NUM_CLASSES) -> dict:
    """Slice the classification layer to the ``keep`` class indices; drop BN counters."""
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    return select_classes(state, keep, num_anchors=num_anchors, num_classes=num_classes)


def import_retinanet_resnet50(state: dict, *, min_size: int = TORCHVISION_MIN_SIZE,
                              max_size: int = TORCHVISION_MAX_SIZE) -> tuple[ModelSpec, dict]:
    """Returns the sadpipe model spec and the converted state dict (strictly loadable)."""
    categories = class_order(coco_categories())  # torchvision's index is the category id
    spec = ModelSpec(arch="resnet50", categories=categories, anchor_layout=AnchorLayout(),
                     preprocessing=Preprocessing(min_size=min_size, max_size=max_size))
    converted = convert_state_dict(state, [cid for cid, _ in categories])
    return spec, converted
