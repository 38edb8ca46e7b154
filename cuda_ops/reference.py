"""Plain differentiable torch implementations: the readable reference (``backend="torch"``).

They follow the formulas literally, in the dtype of the inputs (float32 or float64), using
the numerically stable forms torch provides (``logsigmoid``, ``xlogy``, ``expm1``). Inputs
are assumed validated and normalisers resolved (see :mod:`cuda_ops.dispatch`).
"""
import torch
import torch.nn.functional as F

from cuda_ops.constants import (
    ADL_ALPHA,
    ADL_BETA,
    ADL_GAMMA,
    FOCAL_ALPHA,
    FOCAL_GAMMA,
    IGNORE,
    NORMALIZER_POWER,
)


def _binary_targets(labels, num_classes, dtype):
    """One-hot targets: (M,) int64 labels -> (M, C) 0/1 tensor; -1 / -2 rows are all zero."""
    classes = torch.arange(num_classes, device=labels.device)
    return (labels.unsqueeze(1) == classes).to(dtype)


def _kept_rows(labels, num_rows, dtype, device):
    """(M, 1) weight: 0 for rows labelled IGNORE, else 1 (all ones when ``labels`` is None)."""
    if labels is None:
        return torch.ones((num_rows, 1), dtype=dtype, device=device)
    return (labels != IGNORE).to(dtype).unsqueeze(1)


def sigmoid_focal_loss(logits, labels, normalizer, *, alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA):
    """Sigmoid focal loss (Lin et al.), summed over non-ignored rows, divided by ``normalizer``.

    logits: (M, C) float; labels: (M,) int64; normalizer: 0-dim tensor.
    """
    targets = _binary_targets(labels, logits.shape[1], logits.dtype)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p = torch.sigmoid(logits)
    one_minus_p_t = targets * (1 - p) + (1 - targets) * p
    alpha_t = targets * alpha + (1 - targets) * (1 - alpha)
    loss = alpha_t * one_minus_p_t**gamma * ce
    keep = _kept_rows(labels, logits.shape[0], logits.dtype, logits.device)
    return (loss * keep).sum() / normalizer


def adaptive_distillation_loss(
    student_logits, teacher_probs, labels, normalizer, *, alpha=ADL_ALPHA, gamma=ADL_GAMMA, beta=ADL_BETA
):
    """Adaptive distillation loss (the README's formula), summed over rows not ignored, / ``normalizer``.

    student_logits, teacher_probs: (M, C); labels: (M,) int64 or None; normalizer: 0-dim.
    """
    q = teacher_probs.detach()
    log_p = F.logsigmoid(student_logits)
    log_1mp = F.logsigmoid(-student_logits)
    divergence = -(q * log_p + (1 - q) * log_1mp)  # cross-entropy
    if beta != 0:
        entropy = -(torch.xlogy(q, q) + torch.xlogy(1 - q, 1 - q))
        divergence = (divergence - beta * entropy).clamp(min=0)
    weight = (-torch.expm1(-divergence)) ** gamma
    bracket = -(alpha * q * log_p + (1 - alpha) * (1 - q) * log_1mp)
    keep = _kept_rows(labels, student_logits.shape[0], student_logits.dtype, student_logits.device)
    return (weight * bracket * keep).sum() / normalizer


def power_sum(teacher_probs, power=NORMALIZER_POWER):
    """Sum of ``teacher_probs ** power`` over every element (the ADL normaliser before max(., 1))."""
    return teacher_probs.detach().pow(power).sum()
