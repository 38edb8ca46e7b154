"""Detectron (Caffe2) RetinaNet weights, the SAD release's models, ⇄ sadpipe state dicts.

The release's models are Detectron's variant of the paper architectures; sadpipe records
that variant in the checkpoint (:func:`detectron_spec`): MSRA ResNets stride their
downsampling bottlenecks in the first 1×1 conv (ResNeXt in the 3×3), AffineChannel is frozen
BN with eps 0, P6 is a conv on C5, the legacy anchors and "+1" boxes, BGR input in [0, 255]
minus the pixel means, and 0 as the P7 score threshold.

Blob names (``modeling/ResNet.py``, ``FPN.py``, ``retinanet_heads.py``) → state-dict keys:

=========================================  ===============================================
``conv1_w``, ``res_conv1_bn_{s,b}``        ``backbone.body.conv1``, ``.bn1``
``res{k}_{j}_branch2{a,b,c}_w``, ``_bn_*``  ``backbone.body.layer{k-1}.{j}.conv{1,2,3}``, ``bn*``
``res{k}_0_branch1_w``, ``_bn_*``           ``backbone.body.layer{k-1}.0.downsample.{0,1}``
``fpn_inner_res5_{n}_sum_{w,b}``           ``backbone.fpn.inner_blocks.2.0``
``fpn_inner_res{4,3}_{n}_sum_lateral_*``    ``backbone.fpn.inner_blocks.{1,0}.0``
``fpn_res{5,4,3}_{n}_sum_{w,b}``           ``backbone.fpn.layer_blocks.{2,1,0}.0``
``fpn_6_*``, ``fpn_7_*``                    ``backbone.fpn.extra_blocks.p6``, ``.p7``
``retnet_{cls,bbox}_conv_n{i}_fpn3_*``      ``head.{classification,regression}_head.conv.{i}.0``
``retnet_cls_pred_fpn3_*``                  ``head.classification_head.cls_logits``
``retnet_bbox_pred_fpn3_*``                 ``head.regression_head.bbox_reg``
=========================================  ===============================================

``{n}`` is the stage's last block; AffineChannel scale ``_s`` / bias ``_b`` become the frozen
BN's weight / bias (running mean 0, var 1). The head's weights are stored once, under
level 3. Both layouts put classification outputs anchor-major (``a · C + c``).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from sadpipe.convert.torchvision_import import coco_categories
from sadpipe.data.transforms import DETECTRON_PIXEL_MEANS, Preprocessing
from sadpipe.errors import UserError
from sadpipe.modeling.anchors import DETECTRON_ASPECT_RATIOS, AnchorLayout
from sadpipe.modeling.backbones import ARCHS
from sadpipe.modeling.spec import ModelSpec

# The release's architectures → RESNETS.STRIDE_1X1 of their configs.
DETECTRON_ARCHS: dict[str, bool] = {"resnet50": True, "resnet101": True, "resnext101_64x4d": False}
HEAD_CONVS = 4
FIRST_STAGE = 2                  # res2 is torchvision's layer1
UNIT_STD = (1.0, 1.0, 1.0)
PIXEL_RANGE = 255.0
P7_SCORE_THRESH = 0.0
AFFINE_SUFFIXES = {"s": "weight", "b": "bias"}
FROZEN_BN_BUFFERS = {"running_mean": 0.0, "running_var": 1.0}

# Blobs a release file may hold that the detector does not use, by kind.
SKIPPED_KINDS = (
    ("momentum", re.compile(r".*_momentum$")),
    ("teacher", re.compile(r"^teacher/")),
    ("ImageNet leftover", re.compile(r"^fc1000_")),
)
CONV_BIAS = re.compile(r"^(conv1|res\d+_\d+_branch(1|2[abc]))_b$")


@dataclass(frozen=True)
class ImportSummary:
    """What an import took from the file."""

    used: int
    parameters: int
    skipped: dict[str, int]

    def describe(self) -> str:
        skipped = ", ".join(f"{n} {kind}" for kind, n in self.skipped.items()) or "none"
        return f"{self.used} blobs used ({self.parameters:,} weights); skipped: {skipped}"


def detectron_spec(arch: str, *, min_size: int = 600, max_size: int = 1000) -> ModelSpec:
    """The checkpoint description of a release model of ``arch`` (80 COCO classes; class c is
    the (c+1)-th COCO category id in sorted order, as Detectron's json_dataset maps them)."""
    return ModelSpec(
        arch=arch, categories=tuple(coco_categories()),
        anchor_layout=AnchorLayout(aspect_ratios=DETECTRON_ASPECT_RATIOS, convention="detectron"),
        preprocessing=Preprocessing(min_size=min_size, max_size=max_size,
                                    mean=DETECTRON_PIXEL_MEANS, std=UNIT_STD,
                                    channel_order="bgr", pixel_range=PIXEL_RANGE),
        norm="affine", stride_in_1x1=DETECTRON_ARCHS[arch], p6_from="c5",
        box_convention="detectron", last_level_score_thresh=P7_SCORE_THRESH)


def blob_names(depths: tuple[int, ...]) -> dict[str, str]:
    """Blob name → state-dict key for a body with ``depths`` blocks per stage, model order."""
    names = {"conv1_w": "backbone.body.conv1.weight", **_affine("res_conv1_bn", "backbone.body.bn1")}
    for stage, blocks in enumerate(depths, start=FIRST_STAGE):
        for j in range(blocks):
            block = f"backbone.body.layer{stage - 1}.{j}"
            for letter, index in (("a", 1), ("b", 2), ("c", 3)):
                names[f"res{stage}_{j}_branch2{letter}_w"] = f"{block}.conv{index}.weight"
                names.update(_affine(f"res{stage}_{j}_branch2{letter}_bn", f"{block}.bn{index}"))
            if j == 0:
                names[f"res{stage}_0_branch1_w"] = f"{block}.downsample.0.weight"
                names.update(_affine(f"res{stage}_0_branch1_bn", f"{block}.downsample.1"))
    fpn = "backbone.fpn"
    for level, (stage, blocks) in enumerate(zip((3, 4, 5), depths[1:])):
        last = f"res{stage}_{blocks - 1}_sum"
        inner = f"fpn_inner_{last}" if stage == 5 else f"fpn_inner_{last}_lateral"
        names.update(_conv(inner, f"{fpn}.inner_blocks.{level}.0"))
        names.update(_conv(f"fpn_{last}", f"{fpn}.layer_blocks.{level}.0"))
    names.update(_conv("fpn_6", f"{fpn}.extra_blocks.p6"))
    names.update(_conv("fpn_7", f"{fpn}.extra_blocks.p7"))
    for kind, head, out in (("cls", "classification_head", "cls_logits"),
                            ("bbox", "regression_head", "bbox_reg")):
        for i in range(HEAD_CONVS):
            names.update(_conv(f"retnet_{kind}_conv_n{i}_fpn3", f"head.{head}.conv.{i}.0"))
        names.update(_conv(f"retnet_{kind}_pred_fpn3", f"head.{head}.{out}"))
    return names


def _conv(blob: str, key: str) -> dict[str, str]:
    return {f"{blob}_w": f"{key}.weight", f"{blob}_b": f"{key}.bias"}


def _affine(blob: str, key: str) -> dict[str, str]:
    return {f"{blob}_{s}": f"{key}.{param}" for s, param in AFFINE_SUFFIXES.items()}


def import_blobs(blobs: dict[str, np.ndarray], arch: str, *, source, min_size: int = 600,
                 max_size: int = 1000) -> tuple[ModelSpec, dict, ImportSummary]:
    """Check ``blobs`` against ``arch`` and convert them.

    Returns the spec, a strictly loadable state dict and a summary; a blob that does not
    fit (wrong shape, not part of ``arch``), a missing one or a non-zero conv bias is a
    UserError naming ``source`` and the blob."""
    spec = detectron_spec(arch, min_size=min_size, max_size=max_size)
    names = blob_names(ARCHS[arch].depths)
    used, skipped = _partition(blobs, source)
    state = spec.build().state_dict()
    _check_fit(used, names, state, arch, source)
    for name, key in names.items():
        state[key] = torch.from_numpy(np.array(used[name], dtype=np.float32))
    summary = ImportSummary(used=len(names), parameters=sum(b.size for b in used.values()),
                            skipped=dict(skipped))
    return spec, state, summary


def _partition(blobs: dict, source) -> tuple[dict, Counter]:
    """(blobs the detector may use, counts of the skipped ones by kind)."""
    used, skipped = {}, Counter()
    for name, value in blobs.items():
        kind = next((k for k, pattern in SKIPPED_KINDS if pattern.match(name)), None)
        if kind is None and CONV_BIAS.match(name):
            if np.any(value):
                raise UserError(f"{source}: blob {name} is a non-zero conv bias; the ResNet "
                                "body's convs have none")
            kind = "ImageNet leftover"
        if kind is None:
            used[name] = value
        else:
            skipped[kind] += 1
    return used, skipped


def _check_fit(used: dict, names: dict, state: dict, arch: str, source) -> None:
    """Shapes first (in model order), then blobs ``arch`` does not have, then missing ones."""
    for name, key in names.items():
        if name in used and tuple(used[name].shape) != tuple(state[key].shape):
            raise UserError(f"{source}: blob {name} has shape {tuple(used[name].shape)}, "
                            f"--arch {arch} expects {tuple(state[key].shape)}")
    extra = sorted(set(used) - set(names), key=_model_order)
    if extra:
        raise UserError(f"{source}: blob {extra[0]} does not fit --arch {arch} (not part of "
                        f"that model; {len(extra)} such blobs)")
    missing = [name for name in names if name not in used]
    if missing:
        raise UserError(f"{source}: blob {missing[0]} is missing ({len(missing)} blobs of a "
                        f"{arch} RetinaNet are absent)")


def _model_order(name: str):
    """Body blobs first, then by name with numbers compared as numbers."""
    parts = [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]
    return (not name.startswith(("conv1", "res")), [(isinstance(p, int), p) for p in parts])


def export_blobs(spec: ModelSpec, state: dict, *, source) -> dict[str, np.ndarray]:
    """The Detectron blobs (float32) of a checkpoint of the Detectron variant; a UserError
    naming ``source`` and the first differing property otherwise."""
    if spec.arch not in DETECTRON_ARCHS:
        raise UserError(f"{source}: model.arch '{spec.arch}' has no Detectron counterpart "
                        f"(known: {', '.join(DETECTRON_ARCHS)})")
    want = detectron_spec(spec.arch).variant()
    for key, value in spec.variant().items():
        if value != want[key]:
            raise UserError(f"{source}: not a checkpoint of the Detectron variant: {key} is "
                            f"{value!r}, Detectron's models have {want[key]!r}")
    if spec.category_ids != sorted(spec.category_ids):
        raise UserError(f"{source}: category ids are not in increasing order, so Detectron's "
                        "contiguous classes would name them differently")
    for key, value in state.items():
        buffer = key.rsplit(".", 1)[-1]
        if buffer in FROZEN_BN_BUFFERS and not torch.all(value == FROZEN_BN_BUFFERS[buffer]):
            raise UserError(f"{source}: {key} is not {FROZEN_BN_BUFFERS[buffer]:g} everywhere; "
                            "AffineChannel has no running statistics")
    names = blob_names(ARCHS[spec.arch].depths)
    return {name: state[key].detach().cpu().numpy().astype(np.float32) for name, key in names.items()}
