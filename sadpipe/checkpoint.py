"""Self-describing checkpoints: one file rebuilds the model, its classes and its input
pipeline. Only tensors and plain containers are stored, so ``torch.load(weights_only=True)``
reads it and nothing in it can execute code.

Classes follow :mod:`sadpipe.data.categories` (class c = the (c+1)-th category id in
increasing order). sadpipe writes them in that order; a file that lists them in another
order (made by hand or by another tool) is put in that order as it is read, class layer
included, so it predicts exactly what it predicted before."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from sadpipe.data.categories import Category, as_dicts, class_permutation, in_class_order
from sadpipe.data.transforms import Preprocessing
from sadpipe.errors import UserError
from sadpipe.fileio import atomic_path
from sadpipe.modeling.anchors import AnchorLayout
from sadpipe.modeling.backbones import ARCHS
from sadpipe.modeling.boxes import BoxConvention
from sadpipe.modeling.retinanet import RetinaNet, select_classes
from sadpipe.serialization import load_tagged, plain_dict

FORMAT = "sadpipe-checkpoint"
VERSION = 1


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a detector, feed it and read its outputs.

    The fields after ``norm`` describe Detectron's variant of the paper models (see
    :mod:`sadpipe.modeling.detectron_import`); their defaults are torchvision's, and they are
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


def save_checkpoint(path, spec: ModelSpec, model: torch.nn.Module, **extra) -> None:
    """Write atomically: {"format", "version", "model": spec, "state_dict", **extra}."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "version": VERSION, "model": spec.to_dict(), "state_dict": state,
               **extra}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path) -> dict:
    """Read and validate a checkpoint file; raises UserError naming the file."""
    payload = load_tagged(path, format_name=FORMAT, version=VERSION, what="checkpoint",
                          missing="checkpoint file not found",
                          foreign=f"not a sadpipe checkpoint (no '{FORMAT}' header); use "
                                  "`sadpipe import-torchvision` for torchvision weights")
    arch = payload["model"].get("arch")
    if arch not in ARCHS:
        raise UserError(f"{path}: model.arch '{arch}' is unknown (known: {', '.join(ARCHS)})")
    return in_class_index_order(payload, path)


def in_class_index_order(payload: dict, path) -> dict:
    """``payload`` with its categories, and its class layer's channels, in class-index order
    (unchanged when they already are). Training state (optimizer) is left as it is."""
    model = payload["model"]
    stored = [(int(c["id"]), str(c["name"])) for c in model["categories"]]
    ids = [cid for cid, _ in stored]
    if len(set(ids)) != len(ids):
        twice = next(cid for cid in ids if ids.count(cid) > 1)
        raise UserError(f"{path}: model.categories: id {twice} is used twice")
    perm = class_permutation(stored)
    if perm == list(range(len(stored))):
        return payload
    num_anchors = AnchorLayout.from_dict(model["anchor_layout"]).num_anchors
    state = select_classes(payload["state_dict"], perm, num_anchors=num_anchors,
                           num_classes=len(stored))
    return {**payload, "model": {**model, "categories": as_dicts(stored)}, "state_dict": state}


def load_model(path, *, device="cpu") -> tuple[RetinaNet, ModelSpec]:
    """Rebuild the model of a checkpoint in eval mode. The global torch RNG is left as it was
    (the random init that the weights overwrite draws from a fork): loading a teacher does not
    change the student's init."""
    payload = load_checkpoint(path)
    spec = ModelSpec.from_dict(payload["model"])
    with torch.random.fork_rng(devices=[]):
        model = spec.build()
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval(), spec


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
