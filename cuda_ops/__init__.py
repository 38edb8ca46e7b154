"""Fused loss kernels: sigmoid focal loss and adaptive distillation loss (ADL).

Each loss and its gradient are computed in one pass (numba.cuda kernels on GPUs, numba CPU
kernels elsewhere) behind torch autograd; ``backend="torch"`` is the plain-torch reference.
This package knows nothing about detection and imports nothing from ``sadpipe``.

    loss = cuda_ops.sigmoid_focal_loss(logits, labels)                    # (M, C), (M,)
    loss = cuda_ops.adaptive_distillation_loss(student_logits, teacher_probs, labels)
    n = cuda_ops.power_sum(teacher_probs, 1.8)                            # ADL normaliser

The public names load on first use (PEP 562), so that ``cuda_ops.fastmath`` — the
vectorisable float32 maths the shard encoder shares — and ``cuda_ops.constants`` — the label
codes and loss defaults every layer shares — import without torch.
"""
import importlib

_PUBLIC = {  # name -> module that defines it
    "BACKGROUND": "cuda_ops.constants",
    "IGNORE": "cuda_ops.constants",
    "adaptive_distillation_loss": "cuda_ops.dispatch",
    "power_sum": "cuda_ops.dispatch",
    "sigmoid_focal_loss": "cuda_ops.dispatch",
    "LossInputError": "cuda_ops.errors",
    "BACKENDS": "cuda_ops.validation",
}


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'cuda_ops' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_PUBLIC))


__all__ = [
    "BACKENDS",
    "BACKGROUND",
    "IGNORE",
    "LossInputError",
    "adaptive_distillation_loss",
    "power_sum",
    "sigmoid_focal_loss",
]
