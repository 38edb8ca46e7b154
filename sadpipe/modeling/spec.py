"""What a detector is, apart from its weights: ``ModelSpec`` — architecture, classes, anchors,
input pipeline and the variant of box arithmetic — enough to rebuild it, feed it and read its
outputs. Checkpoints store it (:mod:`sadpipe.checkpoint`); the converters build it for the
models they import (:mod:`sadpipe.convert`)."""
from __future__ import annotations

from dataclasses import dataclass

from sadpipe.data.categories import Category, as_dicts, in_class_order
from sadpipe.data.transforms import Preprocessing
from sadpipe.modeling.anchors import AnchorLayout
from sadpipe.modeling.boxes import BoxConvention
from sadpipe.modeling.retinanet import RetinaNet
from sadpipe.serialization import plain_dict


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a detector, feed it and read its outputs.

    The fields after ``norm`` describe Detectron's variant of the paper models (see
    :mod:`sadpipe.convert.detectron`); their defaults are torchvision's, and they are
    written only when they differ, so older checkpoints read unchanged.
    """

    arch: str
    categories: tuple[Category, ...]   # (COCO category id, name) of class 0, 1, ...: by id
    anchor_layout: AnchorLayout
    preprocessing: Preprocessing
    norm: str = "bn"
    stride_in_1x1: bool = False                 # MSRA ResNet bottlenecks
    p6_from: str = "p5"                         # "p5" | "c5"
    box_convention: str = "torchvision"         # see sadpipe.modeling.boxes
    last_level_score_thresh: float | None = None   # Detectron: 0 on P7 (else score_thresh)

    def __post_init__(self):
        if not in_class_order(self.categories):
            raise ValueError("ModelSpec.categories must be in class-index order (increasing "
                             "ids, sadpipe.data.categories.class_order); got ids "
                             f"{[cid for cid, _ in self.categories]}")

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    @property
    def category_ids(self) -> list[int]:
        return [c for c, _ in self.categories]

    @property
    def boxes(self) -> BoxConvention:
        return BoxConvention(self.box_convention)

    def variant(self) -> dict:
        """What gives the weights their meaning besides arch and classes, by train-config key."""
        layout, prep = self.anchor_layout, self.preprocessing
        return {"model.norm": self.norm, "model.stride_in_1x1": self.stride_in_1x1,
                "model.p6_from": self.p6_from, "model.box_convention": self.box_convention,
                "model.strides": list(layout.strides),
                "model.anchor_size_factor": layout.size_factor,
                "model.scales_per_octave": layout.scales_per_octave,
                "model.aspect_ratios": list(layout.aspect_ratios),
                "model.anchor_convention": layout.convention,
                "input.channel_order": prep.channel_order, "input.pixel_range": prep.pixel_range,
                "input.mean": list(prep.mean), "input.std": list(prep.std)}

    def build(self, *, pretrained: bool = False) -> RetinaNet:
        return RetinaNet(self.arch, self.num_classes, self.anchor_layout, pretrained=pretrained,
                         norm=self.norm, stride_in_1x1=self.stride_in_1x1, p6_from=self.p6_from)

    def to_dict(self) -> dict:
        variant = plain_dict(self, optional=VARIANT_FIELDS)
        return {"arch": self.arch, "num_classes": self.num_classes,
                "categories": as_dicts(self.categories),
                "anchor_layout": self.anchor_layout.to_dict(),
                "preprocessing": self.preprocessing.to_dict(), "norm": self.norm,
                **{k: variant[k] for k in VARIANT_FIELDS if k in variant}}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        last = d.get("last_level_score_thresh")
        return cls(arch=d["arch"],
                   categories=tuple((int(c["id"]), str(c["name"])) for c in d["categories"]),
                   anchor_layout=AnchorLayout.from_dict(d["anchor_layout"]),
                   preprocessing=Preprocessing.from_dict(d["preprocessing"]),
                   norm=d.get("norm", "bn"), stride_in_1x1=bool(d.get("stride_in_1x1", False)),
                   p6_from=str(d.get("p6_from", "p5")),
                   box_convention=str(d.get("box_convention", "torchvision")),
                   last_level_score_thresh=None if last is None else float(last))


VARIANT_FIELDS = ("stride_in_1x1", "p6_from", "box_convention", "last_level_score_thresh")
