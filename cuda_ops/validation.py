"""Argument checks shared by the public losses. Each failure raises
:class:`~cuda_ops.errors.LossInputError` naming the argument, on one line."""
import math
import numbers

import torch

from cuda_ops.constants import IGNORE
from cuda_ops.errors import LossInputError

BACKENDS = ("auto", "numba-cuda", "numba-cpu", "torch")
KERNEL_DTYPES = (torch.float32,)  # what the numba kernels compute in
REFERENCE_DTYPES = (torch.float32, torch.float64)  # the torch reference (float64: gradcheck)


def check_backend(backend):
    if backend not in BACKENDS:
        raise LossInputError("backend", f"expected one of {', '.join(BACKENDS)}, got {backend!r}")


def check_logits(name, logits, dtypes):
    """logits: (M, C) floating tensor, C >= 1."""
    if not isinstance(logits, torch.Tensor):
        raise LossInputError(name, f"expected a torch.Tensor, got {type(logits).__name__}")
    if logits.dim() != 2 or logits.shape[1] < 1:
        raise LossInputError(name, f"expected shape (M, C) with C >= 1, got {tuple(logits.shape)}")
    if logits.dtype not in dtypes:
        allowed = " or ".join(str(d).replace("torch.", "") for d in dtypes)
        raise LossInputError(name, f"expected dtype {allowed}, got {str(logits.dtype)[6:]}")


def check_probs(name, probs, logits):
    """teacher_probs: same shape, dtype and device as the logits (values assumed in [0, 1])."""
    if not isinstance(probs, torch.Tensor):
        raise LossInputError(name, f"expected a torch.Tensor, got {type(probs).__name__}")
    if probs.shape != logits.shape:
        raise LossInputError(
            name, f"expected shape {tuple(logits.shape)} like the logits, got {tuple(probs.shape)}"
        )
    if probs.dtype != logits.dtype:
        raise LossInputError(
            name, f"expected dtype {str(logits.dtype)[6:]} like the logits, got {str(probs.dtype)[6:]}"
        )
    if probs.device != logits.device:
        raise LossInputError(name, f"expected device {logits.device} like the logits, got {probs.device}")


def check_labels(labels, logits):
    """labels: (M,) int64 on the logits' device, values in [-2, C)."""
    if not isinstance(labels, torch.Tensor):
        raise LossInputError("labels", f"expected a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        raise LossInputError(
            "labels", f"expected shape ({logits.shape[0]},) (one per logits row), got {tuple(labels.shape)}"
        )
    if labels.dtype != torch.int64:
        raise LossInputError("labels", f"expected dtype int64, got {str(labels.dtype)[6:]}")
    if labels.device != logits.device:
        raise LossInputError("labels",
                             f"expected device {logits.device} like the logits, got {labels.device}")
    if labels.numel():
        low, high = (int(v) for v in torch.aminmax(labels))
        if low < IGNORE or high >= logits.shape[1]:
            raise LossInputError(
                "labels", f"values must lie in [{IGNORE}, {logits.shape[1]}), found [{low}, {high}]"
            )


def check_real(name, value, *, low=-math.inf, high=math.inf, low_open=False):
    """A finite real number in [low, high] (or (low, high] with ``low_open``); returns float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise LossInputError(name, f"expected a number, got {type(value).__name__}")
    value = float(value)
    too_low = value <= low if low_open else value < low
    if not math.isfinite(value) or too_low or value > high:
        bracket = "(" if low_open else "["
        raise LossInputError(name, f"must be finite and in {bracket}{low}, {high}], got {value}")
    return value


def check_adl_gamma(gamma):
    """The ADW's exponent: 0 or >= 1 (for 0 < gamma < 1 its gradient is unbounded at D = 0)."""
    gamma = check_real("gamma", gamma, low=0.0)
    if 0.0 < gamma < 1.0:
        raise LossInputError("gamma",
                             f"must be 0 or >= 1 (the ADW's gradient is unbounded below 1), got {gamma}")
    return gamma


def normalizer_tensor(normalizer, logits):
    """A user normaliser (number or 0-dim tensor) as a detached 0-dim tensor on the logits' device
    and dtype. Must be > 0 and finite (checked on CPU; a CUDA tensor is not synchronised)."""
    if isinstance(normalizer, torch.Tensor):
        if normalizer.dim() != 0:
            raise LossInputError("normalizer", f"expected a number or a 0-dim tensor, got shape "
                                               f"{tuple(normalizer.shape)}")
        if not normalizer.dtype.is_floating_point and normalizer.dtype != torch.int64:
            raise LossInputError("normalizer", f"expected a real dtype, got {str(normalizer.dtype)[6:]}")
        if normalizer.device.type == "cpu":
            check_real("normalizer", normalizer.item(), low=0.0, low_open=True)
        return normalizer.detach().to(device=logits.device, dtype=logits.dtype)
    value = check_real("normalizer", normalizer, low=0.0, low_open=True)
    return torch.tensor(value, dtype=logits.dtype, device=logits.device)
