"""Backbone + FPN (P3–P7) builders from torchvision parts.

Paper architectures (ResNet-50/101, ResNeXt-101 64x4d) use frozen batch norm and, for users,
ImageNet weights from torchvision. The small ``toy_*`` architectures are RegNet-X bodies
sized for a 2-core CPU, trained from scratch with ordinary batch norm.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
import torch.nn as nn
import torchvision
from torchvision.models import regnet
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _resnet_fpn_extractor
from torchvision.ops import misc as misc_ops
from torchvision.ops.feature_pyramid_network import LastLevelP6P7


@dataclass(frozen=True)
class ArchSpec:
    """One backbone architecture: body builder, FPN width, and whether it is a paper model."""

    family: str                 # "resnet" (torchvision ResNet/ResNeXt) or "regnet"
    body: str | None = None     # torchvision builder name for the "resnet" family
    fpn_channels: int = 256
    depths: tuple[int, ...] = ()   # "regnet": blocks per stage (4 stages, strides 4..32)
    widths: tuple[int, ...] = ()   # "regnet": channels per stage
    group_width: int = 8
    stem_width: int = 32
    head_norm: bool = False        # GroupNorm in the head's conv towers (scratch training)


ARCHS: dict[str, ArchSpec] = {
    "resnet50": ArchSpec("resnet", body="resnet50"),
    "resnet101": ArchSpec("resnet", body="resnet101"),
    "resnext101_64x4d": ArchSpec("resnet", body="resnext101_64x4d"),
    # Embedded default: a teacher and a clearly smaller student (about 4x fewer FLOPs).
    "toy_teacher": ArchSpec("regnet", fpn_channels=64, stem_width=24, depths=(1, 2, 4, 2),
                            widths=(32, 64, 128, 256), group_width=16),
    "toy_student": ArchSpec("regnet", fpn_channels=32, stem_width=16, depths=(1, 1, 2, 1),
                            widths=(16, 32, 64, 128), group_width=8),
}


NORMS = ("bn", "gn", "frozen_bn")
GN_GROUPS = 8


def norm_layer(name: str):
    """Normalisation of the small bodies: batch norm (default), group norm (batch-size and
    process-count independent, e.g. for exact DDP checks) or frozen batch norm."""
    if name == "bn":
        return nn.BatchNorm2d
    if name == "gn":
        return lambda channels: nn.GroupNorm(GN_GROUPS if channels % GN_GROUPS == 0 else 1, channels)
    if name == "frozen_bn":
        return misc_ops.FrozenBatchNorm2d
    raise ValueError(f"norm must be one of {NORMS}, got {name!r}")


def build_backbone(arch: str, *, pretrained: bool = False, trainable_layers: int = 3,
                   norm: str = "bn") -> nn.Module:
    """Body + FPN returning P3..P7 (``OrderedDict`` of 5 feature maps, equal channels).

    ``pretrained`` downloads torchvision's ImageNet weights (paper architectures only, which
    always use frozen batch norm); ``norm`` applies to the small bodies."""
    spec = ARCHS[arch]
    if spec.family == "resnet":
        weights = "DEFAULT" if pretrained else None
        body = getattr(torchvision.models, spec.body)(weights=weights,
                                                      norm_layer=misc_ops.FrozenBatchNorm2d)
        return _resnet_fpn_extractor(body, trainable_layers, returned_layers=[2, 3, 4],
                                     extra_blocks=LastLevelP6P7(spec.fpn_channels, spec.fpn_channels))
    return _regnet_fpn(spec, norm_layer(norm))


def _regnet_fpn(spec: ArchSpec, norm) -> BackboneWithFPN:
    n = len(spec.depths)
    group_widths = [min(spec.group_width, w) for w in spec.widths]
    params = regnet.BlockParams(list(spec.depths), list(spec.widths), group_widths,
                                [1.0] * n, [2] * n)
    body = regnet.RegNet(params, stem_width=spec.stem_width, norm_layer=norm)
    widths = list(spec.widths)
    return_layers = {"block2": "0", "block3": "1", "block4": "2"}
    stages = OrderedDict([("stem", body.stem), *body.trunk_output.named_children()])
    return BackboneWithFPN(nn.Sequential(stages), return_layers=return_layers,
                           in_channels_list=widths[1:4], out_channels=spec.fpn_channels,
                           extra_blocks=LastLevelP6P7(spec.fpn_channels, spec.fpn_channels))
