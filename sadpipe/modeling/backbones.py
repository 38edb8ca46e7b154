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


def build_backbone(arch: str, *, pretrained: bool = False, trainable_layers: int = 3) -> nn.Module:
    """Body + FPN returning P3..P7 (``OrderedDict`` of 5 feature maps, equal channels).

    ``pretrained`` downloads torchvision's ImageNet weights (paper architectures only)."""
    spec = ARCHS[arch]
    if spec.family == "resnet":
        weights = "DEFAULT" if pretrained else None
        body = getattr(torchvision.models, spec.body)(weights=weights,
                                                      norm_layer=misc_ops.FrozenBatchNorm2d)
        return _resnet_fpn_extractor(body, trainable_layers, returned_layers=[2, 3, 4],
                                     extra_blocks=LastLevelP6P7(spec.fpn_channels, spec.fpn_channels))
    return _regnet_fpn(spec)


def _regnet_fpn(spec: ArchSpec) -> BackboneWithFPN:
    n = len(spec.depths)
    group_widths = [min(spec.group_width, w) for w in spec.widths]
    params = regnet.BlockParams(list(spec.depths), list(spec.widths), group_widths,
                                [1.0] * n, [2] * n)
    body = regnet.RegNet(params, stem_width=spec.stem_width, norm_layer=nn.BatchNorm2d)
    widths = list(spec.widths)
    return_layers = {"block2": "0", "block3": "1", "block4": "2"}
    stages = OrderedDict([("stem", body.stem), *body.trunk_output.named_children()])
    return BackboneWithFPN(nn.Sequential(stages), return_layers=return_layers,
                           in_channels_list=widths[1:4], out_channels=spec.fpn_channels,
                           extra_blocks=LastLevelP6P7(spec.fpn_channels, spec.fpn_channels))
