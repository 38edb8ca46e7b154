"""Adaptive distillation loss (ADL) of a batch, and putting per-view teacher scores into the
batch's anchor layout.

Teacher scores are cached per view on the view's own padded grid; a training batch pads
every view to the largest one. :func:`to_batch_layout` places a view's scores on the batch
grid (same image pixels, same anchors) and marks the anchors outside the view's own grid as
ignored for the ADL.
"""
from __future__ import annotations

import torch

import cuda_ops
from cuda_ops.constants import ADL_ALPHA, ADL_BETA, ADL_GAMMA, IGNORE
from sadpipe.modeling.anchors import AnchorLayout


def view_anchor_mask(layout: AnchorLayout, view_padded: tuple[int, int],
                     batch_padded: tuple[int, int]) -> torch.Tensor:
    """(HWA_batch,) bool: the batch-grid anchors that lie on the view's own padded grid. In
    flattened order they are exactly the view's anchors, in the view's own order."""
    masks = []
    for (h, w), (bh, bw) in zip(layout.grid_sizes(view_padded), layout.grid_sizes(batch_padded)):
        inside = torch.zeros(bh, bw, layout.num_anchors, dtype=torch.bool)
        inside[:h, :w] = True
        masks.append(inside.reshape(-1))
    return torch.cat(masks)


def to_batch_layout(values: torch.Tensor, layout: AnchorLayout, view_padded: tuple[int, int],
                    batch_padded: tuple[int, int], *, fill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """values: (HWA_view, C) on the view's grid → (HWA_batch, C) on the batch grid, and the
    (HWA_batch,) mask of :func:`view_anchor_mask`."""
    mask = view_anchor_mask(layout, view_padded, batch_padded).to(values.device)
    out = values.new_full((mask.shape[0], values.shape[1]), fill)
    out[mask] = values
    return out, mask


def soften(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Teacher probabilities with logits divided by the temperature (identity at T = 1)."""
    if temperature == 1.0:
        return probs
    eps = torch.finfo(probs.dtype).tiny
    return torch.sigmoid(torch.logit(probs.clamp(eps, 1 - 1e-7)) / temperature)


def adaptive_distillation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor,
                               labels: torch.Tensor, normalizer, *, alpha: float = ADL_ALPHA,
                               gamma: float = ADL_GAMMA, beta: float = ADL_BETA,
                               temperature: float = 1.0, backend: str = "auto") -> torch.Tensor:
    """ADL of a batch (formula: :mod:`cuda_ops.reference`), through the fused ``cuda_ops`` kernel.

    Args:
        student_logits: (N, HWA, C); teacher_probs: (N, HWA, C) in [0, 1].
        labels: (N, HWA) — anchors labelled ``IGNORE`` (-2) take no part.
        normalizer: Σ q^θ of the batch's teacher scores (from the cache or computed).
        temperature: softens the teacher's logits by 1/T; the loss is scaled by T².
    """
    num_classes = student_logits.shape[-1]
    logits = student_logits.reshape(-1, num_classes).float()
    if temperature != 1.0:
        logits = logits / temperature
    loss = cuda_ops.adaptive_distillation_loss(
        logits, soften(teacher_probs, temperature).reshape(-1, num_classes).float(),
        labels.reshape(-1), alpha=alpha, gamma=gamma, beta=beta, normalizer=normalizer,
        backend=backend)
    return loss * temperature ** 2


@torch.no_grad()
def mean_adaptive_weight(student_logits: torch.Tensor, teacher_probs: torch.Tensor,
                         labels: torch.Tensor, *, gamma: float = ADL_GAMMA, beta: float = ADL_BETA) -> float:
    """Mean ADW = (1 − exp(−D))^γ over valid anchor/class entries (for logging only)."""
    valid = labels != IGNORE
    x = student_logits[valid].double()
    q = teacher_probs[valid].double()
    log_p, log_1mp = torch.nn.functional.logsigmoid(x), torch.nn.functional.logsigmoid(-x)
    entropy = -(torch.xlogy(q, q) + torch.xlogy(1 - q, 1 - q))
    ce = -(q * log_p + (1 - q) * log_1mp)
    adw = (1 - torch.exp(-(ce - beta * entropy))).clamp(min=0) ** gamma
    return float(adw.mean()) if adw.numel() else 0.0
