"""Backbone + FPN (P3–P7) builders from torchvision parts.

Paper architectures (ResNet-50/101, ResNeXt-101 64x4d) use frozen batch norm and, for users,
ImageNet weights from torchvision. The small ``toy_*`` architectures are RegNet-X bodies
sized for a 2-core CPU, with ordinary batch norm; their "ImageNet" is classification on
object crops of the embedded data (``sadpipe pretrain``, shipped in :mod:`sadpipe.zoo`).
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
    head_init: str = "release"     # tower conv init: "release" N(0, 0.01) | "kaiming" (fan-in)


ARCHS: dict[str, ArchSpec] = {
    "resnet50": ArchSpec("resnet", body="resnet50"),
    "resnet101": ArchSpec("resnet", body="resnet101"),
    "resnext101_64x4d": ArchSpec("resnet", body="resnext101_64x4d"),
    # Embedded default: a teacher and a clearly smaller student (about 4x fewer FLOPs).
    "toy_teacher": ArchSpec("regnet", fpn_channels=64, stem_width=24, depths=(1, 2, 4, 2),
                            widths=(32, 64, 128, 256), group_width=16, head_init="kaiming"),
    "toy_student": ArchSpec("regnet", fpn_channels=32, stem_width=16, depths=(1, 1, 2, 1),
                            widths=(16, 32, 64, 128), group_width=8, head_init="kaiming"),
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

    ``pretrained``: for the paper architectures, torchvision's ImageNet weights (downloads;
    frozen batch norm always); for the small bodies, the toy-pretrained body of the model zoo
    (:mod:`sadpipe.zoo`). ``norm`` applies to the small bodies."""
    spec = ARCHS[arch]
    if spec.family == "resnet":
        weights = "DEFAULT" if pretrained else None
        body = getattr(torchvision.models, spec.body)(weights=weights,
                                                      norm_layer=misc_ops.FrozenBatchNorm2d)
        return _resnet_fpn_extractor(body, trainable_layers, returned_layers=[2, 3, 4],
                                     extra_blocks=LastLevelP6P7(spec.fpn_channels, spec.fpn_channels))
    body = build_body(arch, norm=norm)
    if pretrained:
        from sadpipe import zoo  # the zoo reads checkpoints; keep it out of plain model builds
        body.load_state_dict(zoo.load_body(zoo.body_path(arch), arch=arch, norm=norm))
    return BackboneWithFPN(body, return_layers=RETURN_LAYERS, in_channels_list=list(spec.widths[1:4]),
                           out_channels=spec.fpn_channels,
                           extra_blocks=LastLevelP6P7(spec.fpn_channels, spec.fpn_channels))


RETURN_LAYERS = {"block2": "0", "block3": "1", "block4": "2"}  # C3, C4, C5 of a small body


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
    body = regnet.RegNet(params, stem_width=spec.stem_width, norm_layer=norm_layer(norm))
    return nn.Sequential(OrderedDict([("stem", body.stem), *body.trunk_output.named_children()]))
