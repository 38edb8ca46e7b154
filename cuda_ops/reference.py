"""Plain differentiable torch implementations: the readable reference (``backend="torch"``),
and the definition of the losses every backend computes.

They follow the formulas literally, in the dtype of the inputs (float32 or float64), using
the numerically stable forms torch provides (``logsigmoid``, ``xlogy``, ``expm1``). Inputs
are assumed validated and normalisers resolved (see :mod:`cuda_ops.dispatch`).

**Adaptive distillation loss (ADL).** For every row (anchor) and class of the ``(M, C)``
inputs, with student logit x, p = σ(x), and teacher probability q (a constant: no gradient
flows to the teacher)::

    CE   = −q·log p − (1−q)·log(1−p)                    binary cross-entropy of p against q
    H(q) = −q·log q − (1−q)·log(1−q)                    (0·log 0 = 0)
    D    = max(CE − β·H(q), 0)                          β ≤ 1, so D ≥ 0 anyway but for rounding
    ADW  = (1 − e^(−D))^γ                               the adaptive distillation weight
    ADL  = Σ_{rows not IGNORE, classes} ADW · [α·q·(−log p) + (1−α)·(1−q)·(−log(1−p))] / N
    N    = max(Σ_{all rows, classes} q^θ, 1)

CE − H(q) is KL(q ‖ p), so β = 1 gives ADW = (1 − e^(−KL))^γ, and β = 0 (the release's
setting) gives D = KL + H(q), the paper's "KL + β·T(q)" with its β = 1. The gradient flows
through ADW as well as through the bracket (the release differentiates the whole
expression). Rows labelled ``IGNORE`` take no part in the sum; the default normaliser N
(:func:`cuda_ops.adaptive_distillation_loss` with ``normalizer=None``) counts every row,
ignored ones included, and a caller may pass its own (sadpipe passes the Σ q^θ of the whole
batch, stored by the teacher-score cache). Defaults (:mod:`cuda_ops.constants`): α = 0.5,
γ = 2, β = 0, θ = 1.8. The fused kernels clamp D to at most 87 as well (float32 ``exp``).

**Sigmoid focal loss** (Lin et al.): with t = 1 for the row's class and 0 for the others,
p_t = p if t else 1 − p, α_t = α if t else 1 − α, ``Σ_{rows not IGNORE, classes}
α_t·(1 − p_t)^γ·CE(x, t) / N`` with N = max(#rows labelled c ≥ 0, 1) unless given; defaults
α = 0.25, γ = 2. Rows labelled ``BACKGROUND`` are negative for every class.
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
    """Adaptive distillation loss (the module docstring's formula), summed over rows not ignored,
    divided by ``normalizer``.

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
