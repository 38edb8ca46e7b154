"""Self-describing checkpoints: one file rebuilds the model, its classes and its input
pipeline. Only tensors and plain containers are stored, so ``torch.load(weights_only=True)``
reads it and nothing in it can execute code.

Classes follow :mod:`sadpipe.data.categories` (class c = the (c+1)-th category id in
increasing order). sadpipe writes them in that order; a file that lists them in another
order (made by hand or by another tool) is put in that order as it is read, class layer
included, so it predicts exactly what it predicted before."""
from __future__ import annotations

import torch

from sadpipe.data.categories import as_dicts, class_permutation
from sadpipe.errors import UserError
from sadpipe.fileio import atomic_path
from sadpipe.modeling.anchors import AnchorLayout
from sadpipe.modeling.backbones import ARCHS
from sadpipe.modeling.retinanet import RetinaNet, select_classes
from sadpipe.modeling.spec import ModelSpec
from sadpipe.serialization import load_tagged

FORMAT = "sadpipe-checkpoint"
VERSION = 1


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
