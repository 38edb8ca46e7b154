"""Fused loss kernels: sigmoid focal loss and adaptive distillation loss (ADL).

Each loss and its gradient are computed in one pass (numba.cuda kernels on GPUs, numba CPU
kernels elsewhere) behind torch autograd; ``backend="torch"`` is the plain-torch reference.
This package knows nothing about detection and imports nothing from ``sadpipe``.

    loss = cuda_ops.sigmoid_focal_loss(logits, labels)                    # (M, C), (M,)
    loss = cuda_ops.adaptive_distillation_loss(student_logits, teacher_probs, labels)
    n = cuda_ops.power_sum(teacher_probs, 1.8)                            # ADL normaliser
"""
from cuda_ops.constants import BACKGROUND, IGNORE
from cuda_ops.dispatch import adaptive_distillation_loss, power_sum, sigmoid_focal_loss
from cuda_ops.errors import LossInputError
from cuda_ops.validation import BACKENDS

__all__ = [
    "BACKENDS",
    "BACKGROUND",
    "IGNORE",
    "LossInputError",
    "adaptive_distillation_loss",
    "power_sum",
    "sigmoid_focal_loss",
]
