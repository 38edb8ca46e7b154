"""Inference copies of a RetinaNet with each body batch norm folded into the convolution
before it.

In eval mode a batch norm is a per-channel affine map, y = (x - mean) / sqrt(var + eps) · w + b,
so the convolution before it can absorb it: W' = W · s, b' = (b_conv - mean) · s + b with
s = w / sqrt(var + eps). Detectron deploys its bodies this way (AffineChannel folded at
export). On the CPU at the toy sizes the unfolded norms cost about a third of the toy
models' forward time (``python -m sadpipe.bench.inference --compare-unfolded``: both ways in
one process).

The folding is torch's own (``torch.fx.experimental.optimization.fuse``: trace the body,
fold each Conv2d → BatchNorm2d pair); frozen batch norms (torchvision's
``FrozenBatchNorm2d``, Detectron's AffineChannel) are first turned into the eval-mode
``BatchNorm2d`` with the same statistics, so every body of :data:`~sadpipe.modeling.backbones.ARCHS`
folds. The FPN and the head have no batch norm.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.fx.experimental import optimization
from torchvision.ops import misc as misc_ops


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """An eval-mode copy of a RetinaNet ``model`` (``backbone.body``: the body) whose body
    has every batch norm that follows a convolution folded into it. Outputs equal the
    model's up to float rounding; ``model`` itself is left as it was (a training loop's
    periodic evaluation folds a copy)."""
    folded = copy.deepcopy(model).eval()
    body = folded.backbone.body
    _thaw_frozen_norms(body)
    folded.backbone.body = optimization.fuse(body, inplace=True)
    return folded


def _thaw_frozen_norms(module: nn.Module) -> None:
    """In place: each ``FrozenBatchNorm2d`` under ``module`` becomes an eval ``BatchNorm2d``
    with its weight, bias, running mean, running variance and eps (the same function)."""
    for name, child in module.named_children():
        if isinstance(child, misc_ops.FrozenBatchNorm2d):
            setattr(module, name, _as_batch_norm(child))
        else:
            _thaw_frozen_norms(child)


def _as_batch_norm(frozen: misc_ops.FrozenBatchNorm2d) -> nn.BatchNorm2d:
    norm = nn.BatchNorm2d(frozen.weight.numel(), eps=frozen.eps).to(frozen.weight.device)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(norm, name).copy_(getattr(frozen, name))
    return norm.eval()
