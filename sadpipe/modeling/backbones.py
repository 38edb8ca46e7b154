"""Backbone + FPN (P3–P7) builders from torchvision parts.

Paper architectures (ResNet-50/101, ResNeXt-101 64x4d) and the deployable student bodies
(ResNet-18/34, MobileNetV3-Large, RegNetX-800MF) are torchvision's classification models with
frozen batch norm and, with ``pretrained``, torchvision's ImageNet weights (the weight enum's
DEFAULT, downloaded once into torch's hub cache, ``$TORCH_HOME/hub/checkpoints/<file>``). The
small ``toy_*`` architectures are RegNet-X bodies sized for a 2-core CPU, with ordinary batch
norm; their "ImageNet" is classification on object crops of the embedded data (``sadpipe
pretrain``, shipped in :mod:`sadpipe.zoo`).

Every body feeds the FPN its last feature maps at strides 8, 16 and 32 (C3–C5); the stem and
the stride-4 stage of an ImageNet body stay frozen, as torchvision's detection models keep
them (``trainable_layers=3`` of a ResNet).

Two variants of the paper bodies exist, recorded in each checkpoint: torchvision's (stride
on the 3×3 conv, frozen BN with eps 1e-5, P6 from P5) and Detectron's, the SAD release's
(stride on the first 1×1 conv for the MSRA ResNets, AffineChannel = frozen BN with eps 0,
P6 from C5).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import partial

import torch.nn as nn
import torchvision
from torchvision.models import mobilenetv3, regnet, resnet
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _resnet_fpn_extractor
from torchvision.ops import misc as misc_ops
from torchvision.ops.feature_pyramid_network import LastLevelP6P7


@dataclass(frozen=True)
class ArchSpec:
    """One backbone architecture: body builder, FPN width, and whether it is a paper model."""

    family: str                 # see FAMILIES
    body: str | None = None     # torchvision classification model (its ImageNet weights fit)
    fpn_channels: int = 256
    depths: tuple[int, ...] = ()   # blocks per stage (4 stages, strides 4..32)
    block: str = "bottleneck"      # "resnet": "bottleneck" (R-50 and up) | "basic" (R-18/34)
    groups: int = 1                # "resnet": bottleneck groups (ResNeXt: 64)
    width_per_group: int = 64      # "resnet": bottleneck width per group (ResNeXt 64x4d: 4)
    bn_eps: float = 1e-5           # ImageNet bodies: the eps their batch norm was trained with
    widths: tuple[int, ...] = ()   # "regnet": channels per stage
    group_width: int = 8
    stem_width: int = 32
    head_norm: bool = False        # GroupNorm in the head's conv towers (scratch training)
    head_init: str = "release"     # tower conv init: "release" N(0, 0.01) | "kaiming" (fan-in)


# "resnet": torchvision ResNet / ResNeXt; "mobilenet": torchvision MobileNetV3;
# "regnet_imagenet": torchvision RegNet; "regnet": the small toy bodies (sadpipe pretrain).
FAMILIES = ("resnet", "mobilenet", "regnet_imagenet", "regnet")

ARCHS: dict[str, ArchSpec] = {
    "resnet50": ArchSpec("resnet", body="resnet50", depths=(3, 4, 6, 3)),
    "resnet101": ArchSpec("resnet", body="resnet101", depths=(3, 4, 23, 3)),
    "resnext101_64x4d": ArchSpec("resnet", body="resnext101_64x4d", depths=(3, 4, 23, 3),
                                 groups=64, width_per_group=4),
    # Deployable students (and small teachers) for your own data, ImageNet bodies as above.
    "resnet18": ArchSpec("resnet", body="resnet18", depths=(2, 2, 2, 2), block="basic"),
    "resnet34": ArchSpec("resnet", body="resnet34", depths=(3, 4, 6, 3), block="basic"),
    "mobilenet_v3_large": ArchSpec("mobilenet", body="mobilenet_v3_large", bn_eps=0.001),
    "regnet_x_800mf": ArchSpec("regnet_imagenet", body="regnet_x_800mf"),
    # Embedded default: a teacher and a clearly smaller student (about 4x fewer FLOPs).
    "toy_teacher": ArchSpec("regnet", fpn_channels=64, stem_width=24, depths=(1, 2, 4, 2),
                            widths=(32, 64, 128, 256), group_width=16, head_init="kaiming"),
    "toy_student": ArchSpec("regnet", fpn_channels=32, stem_width=16, depths=(1, 1, 2, 1),
                            widths=(16, 32, 64, 128), group_width=8, head_init="kaiming"),
    # The toy R-50 to the teacher's R-101 (pipelines/toy_paper.toml): a body with 0.3x the
    # teacher's parameters, FPN 48; chosen by measurement to run >= 1.5x the teacher's
    # inference images/s (python -m sadpipe.bench.inference) without starving the head.
    "toy_student_mid": ArchSpec("regnet", fpn_channels=48, stem_width=16, depths=(1, 1, 3, 1),
                                widths=(24, 48, 96, 192), group_width=8, head_init="kaiming"),
}


NORMS = ("bn", "gn", "frozen_bn", "affine")
P6_INPUTS = ("p5", "c5")
GN_GROUPS = 8


def norm_layer(name: str):
    """Normalisation of the small bodies: batch norm (default), group norm (batch-size and
    process-count independent, e.g. for exact DDP checks) or frozen batch norm; "affine" is
    frozen batch norm with eps 0, Detectron's AffineChannel y = x·s + b (any body)."""
    if name == "bn":
        return nn.BatchNorm2d
    if name == "gn":
        return lambda channels: nn.GroupNorm(GN_GROUPS if channels % GN_GROUPS == 0 else 1, channels)
    if name == "frozen_bn":
        return misc_ops.FrozenBatchNorm2d
    if name == "affine":
        return partial(misc_ops.FrozenBatchNorm2d, eps=0.0)
    raise ValueError(f"norm must be one of {NORMS}, got {name!r}")


def build_backbone(arch: str, *, pretrained: bool = False, trainable_layers: int = 3,
                   norm: str = "bn", stride_in_1x1: bool = False, p6_from: str = "p5") -> nn.Module:
    """Body + FPN returning P3..P7 (``OrderedDict`` of 5 feature maps, equal channels).

    ``pretrained``: for the ImageNet bodies (paper architectures and the deployable
    students), torchvision's ImageNet weights (:func:`imagenet_body`; frozen batch norm, or
    "affine"); for the small bodies, the toy-pretrained body of the model zoo
    (:mod:`sadpipe.zoo`). ``norm`` applies to the small bodies.
    ``stride_in_1x1``: a "resnet" body strides its downsampling bottlenecks in the first
    1×1 conv (MSRA/Detectron) instead of the 3×3. ``p6_from``: P6 is a 3×3/2 conv on P5
    (torchvision) or on C5 (Detectron)."""
    if p6_from not in P6_INPUTS:
        raise ValueError(f"p6_from must be one of {P6_INPUTS}, got {p6_from!r}")
    spec = ARCHS[arch]
    if spec.family != "resnet" and (stride_in_1x1 or p6_from != "p5"):
        raise ValueError(f"{arch}: stride_in_1x1 and P6 from C5 exist for the resnet bodies only")
    if stride_in_1x1 and spec.block != "bottleneck":
        raise ValueError(f"{arch}: stride_in_1x1 exists for bottleneck blocks only")
    if spec.family == "resnet":
        body = _resnet_body(spec, norm, pretrained=pretrained, stride_in_1x1=stride_in_1x1)
        p6_channels = body.fc.in_features if p6_from == "c5" else spec.fpn_channels
        return _resnet_fpn_extractor(body, trainable_layers, returned_layers=[2, 3, 4],
                                     extra_blocks=LastLevelP6P7(p6_channels, spec.fpn_channels))
    if spec.family == "mobilenet":
        body = imagenet_body(spec.body, _frozen_norm(spec, norm), pretrained=pretrained)
        return _mobilenet_fpn(body, spec.fpn_channels)
    if spec.family == "regnet_imagenet":
        body = imagenet_body(spec.body, _frozen_norm(spec, norm), pretrained=pretrained)
        trunk = _regnet_trunk(body)
        _freeze(trunk.stem, trunk.block1)
        return _regnet_fpn(trunk, spec.fpn_channels)
    body = build_body(arch, norm=norm)
    if pretrained:
        from sadpipe import zoo  # the zoo reads checkpoints; keep it out of plain model builds
        body.load_state_dict(zoo.load_body(zoo.body_path(arch), arch=arch, norm=norm))
    return _regnet_fpn(body, spec.fpn_channels)


RETURN_LAYERS = {"block2": "0", "block3": "1", "block4": "2"}  # C3, C4, C5 of a RegNet trunk


def imagenet_weights(name: str) -> torchvision.models.WeightsEnum:
    """torchvision's default ImageNet weights of classification model ``name``; its file is
    ``$TORCH_HOME/hub/checkpoints/`` + the last part of ``.url`` once downloaded."""
    return torchvision.models.get_model_weights(name).DEFAULT


def imagenet_body(name: str, norm, *, pretrained: bool) -> nn.Module:
    """torchvision's classification model ``name`` built with the normalisation ``norm``,
    with its ImageNet weights when ``pretrained`` (:func:`load_imagenet_weights`)."""
    model = torchvision.models.get_model(name, weights=None, norm_layer=norm)
    if pretrained:
        load_imagenet_weights(model, name)
    return model


def load_imagenet_weights(model: nn.Module, name: str) -> None:
    """torchvision's ImageNet weights of ``name`` into ``model``, downloaded into torch's hub
    cache on first use (sha256-checked then) and loaded strictly: every tensor of the file
    lands, and every tensor of the model comes from it."""
    model.load_state_dict(imagenet_weights(name).get_state_dict(progress=True, check_hash=True))


def _frozen_norm(spec: ArchSpec, norm: str):
    """Frozen batch norm with the eps the ImageNet weights were trained with; "affine":
    eps 0 (Detectron's AffineChannel)."""
    return norm_layer("affine") if norm == "affine" else partial(misc_ops.FrozenBatchNorm2d,
                                                                  eps=spec.bn_eps)


def _resnet_body(spec: ArchSpec, norm: str, *, pretrained: bool, stride_in_1x1: bool) -> resnet.ResNet:
    block = resnet.Bottleneck if spec.block == "bottleneck" else resnet.BasicBlock
    body = resnet.ResNet(block, list(spec.depths), groups=spec.groups,
                         width_per_group=spec.width_per_group, norm_layer=_frozen_norm(spec, norm))
    if pretrained:
        load_imagenet_weights(body, spec.body)
    if stride_in_1x1:
        for stage in (body.layer2, body.layer3, body.layer4):
            first = stage[0]
            first.conv1.stride, first.conv2.stride = first.conv2.stride, first.conv1.stride
    return body


def _mobilenet_fpn(body: mobilenetv3.MobileNetV3, fpn_channels: int) -> BackboneWithFPN:
    """The FPN on the last block at strides 8, 16 and 32 of ``body.features`` (torchvision
    marks each downsampling block ``_is_cn``: strides 4, 8, 16, 32); stem and stride-4
    blocks frozen."""
    features = body.features
    downsampling = [i for i, block in enumerate(features) if getattr(block, "_is_cn", False)]
    ends = [downsampling[2] - 1, downsampling[3] - 1, len(features) - 1]
    _freeze(*features[:downsampling[1]])
    return BackboneWithFPN(features, return_layers={str(i): str(k) for k, i in enumerate(ends)},
                           in_channels_list=[_out_channels(features[i]) for i in ends],
                           out_channels=fpn_channels,
                           extra_blocks=LastLevelP6P7(fpn_channels, fpn_channels))


def _regnet_trunk(body: regnet.RegNet) -> nn.Sequential:
    """``stem``, ``block1`` .. ``block4`` of a RegNet (strides 2..32), without its classifier."""
    return nn.Sequential(OrderedDict([("stem", body.stem), *body.trunk_output.named_children()]))


def _regnet_fpn(trunk: nn.Sequential, fpn_channels: int) -> BackboneWithFPN:
    """The FPN on ``block2`` .. ``block4`` (C3–C5) of a RegNet trunk."""
    return BackboneWithFPN(trunk, return_layers=RETURN_LAYERS,
                           in_channels_list=[_out_channels(getattr(trunk, name)) for name in RETURN_LAYERS],
                           out_channels=fpn_channels,
                           extra_blocks=LastLevelP6P7(fpn_channels, fpn_channels))


def _out_channels(module: nn.Module) -> int:
    """Channels of a block's output: those of its last convolution."""
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)][-1].out_channels


def _freeze(*modules: nn.Module) -> None:
    for module in modules:
        module.requires_grad_(False)


def build_body(arch: str, *, norm: str = "bn") -> nn.Sequential:
    """The RegNet-X body of a small arch: ``stem``, ``block1`` .. ``block4`` (strides 2..32),
    output (N, widths[-1], H/32, W/32). The same module is pretrained on classification
    crops and then used under the FPN."""
    spec = ARCHS[arch]
    if spec.family != "regnet":
        raise ValueError(f"{arch}: not a small (RegNet) body")
    n = len(spec.depths)
    group_widths = [min(spec.group_width, w) for w in spec.widths]
    params = regnet.BlockParams(list(spec.depths), list(spec.widths), group_widths,
                                [1.0] * n, [2] * n)
    return _regnet_trunk(regnet.RegNet(params, stem_width=spec.stem_width, norm_layer=norm_layer(norm)))
