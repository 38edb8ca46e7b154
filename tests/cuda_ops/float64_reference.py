"""Independent float64 references for the cuda_ops tests, written from the formulas (the module
docstring of cuda_ops.reference), not from cuda_ops' code: element losses in float64, gradients
by torch autograd."""
import torch

IGNORE = -2


def _log_sigmoids(x):
    """log p and log(1 - p) for p = sigmoid(x), stable for any finite x."""
    zero = torch.zeros_like(x)
    return -torch.logaddexp(zero, -x), -torch.logaddexp(zero, x)


def _row_mask(labels, num_rows):
    if labels is None:
        return torch.ones(num_rows, 1, dtype=torch.float64)
    return (labels != IGNORE).double().unsqueeze(1)


def adl_elements(x, q, *, alpha=0.5, gamma=2.0, beta=0.0):
    """Per-element ADL numerator, (M, C) float64:
    CE = -q log p - (1-q) log(1-p); D = CE - beta H(q); ADW = (1 - exp(-D))^gamma;
    ADW * [alpha q (-log p) + (1 - alpha)(1 - q)(-log(1 - p))]."""
    log_p, log_1mp = _log_sigmoids(x)
    ce = -q * log_p - (1 - q) * log_1mp
    entropy = torch.special.entr(q) + torch.special.entr(1 - q)
    d = ce - beta * entropy
    adw = (1 - torch.exp(-d)) ** gamma
    return adw * (alpha * q * (-log_p) + (1 - alpha) * (1 - q) * (-log_1mp))


def adl(x, q, labels=None, *, alpha=0.5, gamma=2.0, beta=0.0, normalizer=None, power=1.8):
    """(loss, d loss / d x) in float64 for float inputs x, q (M, C) and optional labels (M,)."""
    x = x.detach().double().requires_grad_(True)
    q = q.detach().double()
    if normalizer is None:
        normalizer = max(float((q**power).sum()), 1.0)
    elements = adl_elements(x, q, alpha=alpha, gamma=gamma, beta=beta)
    loss = (elements * _row_mask(labels, x.shape[0])).sum() / float(normalizer)
    (grad,) = torch.autograd.grad(loss, x) if x.numel() else (torch.zeros_like(x),)
    return loss.detach(), grad


def focal(x, labels, *, alpha=0.25, gamma=2.0, normalizer=None):
    """(loss, d loss / d x) in float64 of the sigmoid focal loss with per-row labels:
    loss = alpha_t (1 - p_t)^gamma (-log p_t), p_t the probability of the binary target."""
    x = x.detach().double().requires_grad_(True)
    if normalizer is None:
        normalizer = max(int((labels >= 0).sum()), 1)
    classes = torch.arange(x.shape[1]).unsqueeze(0)
    target = (labels.unsqueeze(1) == classes).double()
    log_p, log_1mp = _log_sigmoids(x)
    log_pt = target * log_p + (1 - target) * log_1mp
    alpha_t = target * alpha + (1 - target) * (1 - alpha)
    elements = alpha_t * (1 - torch.exp(log_pt)) ** gamma * (-log_pt)
    loss = (elements * _row_mask(labels, x.shape[0])).sum() / float(normalizer)
    (grad,) = torch.autograd.grad(loss, x) if x.numel() else (torch.zeros_like(x),)
    return loss.detach(), grad
