"""The public losses: validate arguments, resolve the normaliser, pick a backend, wire autograd.

Backends: ``"torch"`` (plain differentiable torch ops, :mod:`cuda_ops.reference`),
``"numba-cpu"`` (:mod:`cuda_ops.cpu_backend`), ``"numba-cuda"`` (:mod:`cuda_ops.cuda_backend`,
imported on first use only, so a machine without CUDA never loads numba.cuda) and ``"auto"``
(numba-cuda for CUDA tensors, numba-cpu for CPU tensors).
"""
import importlib

from cuda_ops import reference
from cuda_ops.autograd import FusedLossFunction
from cuda_ops.constants import ADL_ALPHA, ADL_BETA, ADL_GAMMA, FOCAL_ALPHA, FOCAL_GAMMA, NORMALIZER_POWER
from cuda_ops.errors import LossInputError
from cuda_ops.validation import (
    KERNEL_DTYPES,
    REFERENCE_DTYPES,
    check_adl_gamma,
    check_backend,
    check_labels,
    check_logits,
    check_probs,
    check_real,
    normalizer_tensor,
)

_FUSED_MODULES = {"numba-cpu": "cuda_ops.cpu_backend", "numba-cuda": "cuda_ops.cuda_backend"}


def _cuda_backend():
    try:
        return importlib.import_module("cuda_ops.cuda_backend")
    except ImportError as err:  # numba-cuda missing or unusable
        raise LossInputError("backend", f"'numba-cuda' is unavailable here ({err})") from None


def resolve_backend(backend, device):
    """Name of the backend that runs tensors on ``device`` for the requested ``backend``."""
    check_backend(backend)
    if backend == "auto":
        return "numba-cuda" if device.type == "cuda" else "numba-cpu"
    if backend == "numba-cpu" and device.type != "cpu":
        raise LossInputError("backend", f"'numba-cpu' needs CPU tensors, got device {device}")
    if backend == "numba-cuda" and not _cuda_backend().accepts(device):
        raise LossInputError(
            "backend",
            f"'numba-cuda' needs CUDA tensors (or NUMBA_ENABLE_CUDASIM=1 set before numba is "
            f"imported, to use the simulator), got device {device}",
        )
    return backend


def _fused(backend):
    if backend == "numba-cuda":
        return _cuda_backend()
    return importlib.import_module(_FUSED_MODULES[backend])


def _logits_dtypes(backend):
    return REFERENCE_DTYPES if backend == "torch" else KERNEL_DTYPES


def sigmoid_focal_loss(logits, labels, *, alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA, normalizer=None,
                       backend="auto"):
    """Sigmoid focal loss summed over non-ignored rows and all classes, divided by ``normalizer``.

    Args:
        logits: (M, C) float32 (float64 also accepted by ``backend="torch"``).
        labels: (M,) int64: ``c >= 0`` positive for class c, -1 background, -2 ignored.
        alpha, gamma: the focal loss's class balance and focusing exponent (gamma >= 0).
        normalizer: number or 0-dim tensor; default ``max(#rows with label >= 0, 1)``.
        backend: "auto", "numba-cuda", "numba-cpu" or "torch".

    Returns:
        0-dim tensor in the logits' dtype; gradients flow to ``logits`` only.
    """
    check_logits("logits", logits, REFERENCE_DTYPES)
    name = resolve_backend(backend, logits.device)
    check_logits("logits", logits, _logits_dtypes(name))
    check_labels(labels, logits)
    alpha = check_real("alpha", alpha, low=0.0, high=1.0)
    gamma = check_real("gamma", gamma, low=0.0)
    if normalizer is None:
        normalizer = (labels >= 0).sum().clamp(min=1).to(logits.dtype)
    else:
        normalizer = normalizer_tensor(normalizer, logits)
    if name == "torch":
        return reference.sigmoid_focal_loss(logits, labels, normalizer, alpha=alpha, gamma=gamma)
    kernels = _fused(name)
    return FusedLossFunction.apply(
        logits,
        lambda x: kernels.sigmoid_focal_loss(x, labels, normalizer, alpha=alpha, gamma=gamma),
    )


def adaptive_distillation_loss(student_logits, teacher_probs, labels=None, *, alpha=ADL_ALPHA,
                               gamma=ADL_GAMMA, beta=ADL_BETA, normalizer=None,
                               normalizer_power=NORMALIZER_POWER, backend="auto"):
    """Adaptive distillation loss of a student against a teacher's probabilities (the formula:
    :mod:`cuda_ops.reference`).

    Args:
        student_logits: (M, C) float32 (float64 also accepted by ``backend="torch"``).
        teacher_probs: (M, C) in [0, 1], same dtype and device (not differentiated).
        labels: optional (M,) int64 per-row labels; rows labelled -2 are left out.
        alpha: weight of the positive part of the bracket; gamma: ADW exponent (0 or >= 1);
        beta: entropy weight in D = CE - beta * H(q) (<= 1, so that D >= 0).
        normalizer: number or 0-dim tensor; default ``max(power_sum(teacher_probs,
            normalizer_power), 1)`` taken over all rows, ignored ones included.
        backend: "auto", "numba-cuda", "numba-cpu" or "torch".

    Returns:
        0-dim tensor in the logits' dtype; gradients flow to ``student_logits`` only.
    """
    check_logits("student_logits", student_logits, REFERENCE_DTYPES)
    name = resolve_backend(backend, student_logits.device)
    check_logits("student_logits", student_logits, _logits_dtypes(name))
    check_probs("teacher_probs", teacher_probs, student_logits)
    if labels is not None:
        check_labels(labels, student_logits)
    alpha = check_real("alpha", alpha, low=0.0, high=1.0)
    gamma = check_adl_gamma(gamma)
    beta = check_real("beta", beta, high=1.0)
    if normalizer is None:
        power = check_real("normalizer_power", normalizer_power, low=0.0, low_open=True)
        normalizer = _power_sum(teacher_probs, power, name).clamp(min=1)
    else:
        normalizer = normalizer_tensor(normalizer, student_logits)
    if name == "torch":
        return reference.adaptive_distillation_loss(
            student_logits, teacher_probs, labels, normalizer, alpha=alpha, gamma=gamma, beta=beta
        )
    kernels = _fused(name)
    return FusedLossFunction.apply(
        student_logits,
        lambda x: kernels.adaptive_distillation_loss(
            x, teacher_probs, labels, normalizer, alpha=alpha, gamma=gamma, beta=beta
        ),
    )


def power_sum(teacher_probs, power=NORMALIZER_POWER, *, backend="auto"):
    """Sum of ``teacher_probs ** power`` over every element: the ADL normaliser before max(., 1).

    teacher_probs: (M, C) float32 in [0, 1] (float64 with ``backend="torch"``). Returns 0-dim.
    """
    check_logits("teacher_probs", teacher_probs, REFERENCE_DTYPES)
    name = resolve_backend(backend, teacher_probs.device)
    check_logits("teacher_probs", teacher_probs, _logits_dtypes(name))
    power = check_real("power", power, low=0.0, low_open=True)
    return _power_sum(teacher_probs, power, name)


def _power_sum(teacher_probs, power, backend):
    if backend == "torch":
        return reference.power_sum(teacher_probs, power)
    return _fused(backend).power_sum(teacher_probs, power)


