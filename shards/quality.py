"""How much a codec changes the adaptive distillation loss (ADL), in float64 numpy.

ADL as defined in :mod:`cuda_ops.reference`, per (anchor, class), student logit x,
p = sigmoid(x), teacher score q::

    CE  = -q log p - (1-q) log(1-p);   D = CE - beta * H(q);   ADW = (1 - exp(-D)) ** gamma
    ADL = sum ADW * [alpha q (-log p) + (1-alpha)(1-q)(-log(1-p))] / N,  N = max(sum q**theta, 1)

Used by the benchmark; the tests check it against an independent torch-autograd reference.
"""
import numpy as np

from cuda_ops.constants import ADL_ALPHA, ADL_BETA, ADL_GAMMA, NORMALIZER_POWER

PRIOR = 0.01  # RetinaNet's classification prior: an untrained student predicts ~0.01


def adl_and_grad(q, logits, *, normalizer, alpha=ADL_ALPHA, gamma=ADL_GAMMA, beta=ADL_BETA):
    """ADL value and its gradient w.r.t. the student logits.

    q, logits: (HWA, C); normalizer: N (already max(., 1)). Returns (float, (HWA, C) float64)."""
    q = np.asarray(q, np.float64)
    x = np.asarray(logits, np.float64)
    log_p, log_1mp = -np.logaddexp(0.0, -x), -np.logaddexp(0.0, x)
    p = np.exp(log_p)
    entropy = -_xlogy(q, q) - _xlogy(1.0 - q, 1.0 - q)
    ce = -q * log_p - (1.0 - q) * log_1mp
    one_minus = -np.expm1(-(ce - beta * entropy))  # 1 - exp(-D)
    adw = one_minus ** gamma
    bracket = alpha * q * -log_p + (1.0 - alpha) * (1.0 - q) * -log_1mp
    d_adw = gamma * one_minus ** (gamma - 1.0) * (1.0 - one_minus) * (p - q)
    d_bracket = -alpha * q * (1.0 - p) + (1.0 - alpha) * (1.0 - q) * p
    loss = float(np.sum(adw * bracket)) / normalizer
    return loss, (d_adw * bracket + adw * d_bracket) / normalizer


def normalizer(q, theta=NORMALIZER_POWER):
    """N = max(sum q**theta, 1), from the dense scores."""
    return max(float(np.sum(np.asarray(q, np.float64) ** theta)), 1.0)


def codec_error(dense, decoded, logits):
    """(relative ADL error, gradient cosine) of decoded vs dense scores for one student."""
    n = normalizer(dense)
    loss, grad = adl_and_grad(dense, logits, normalizer=n)
    loss_hat, grad_hat = adl_and_grad(decoded, logits, normalizer=n)
    cosine = float(np.sum(grad * grad_hat) / (np.linalg.norm(grad) * np.linalg.norm(grad_hat)))
    return (loss_hat - loss) / loss, cosine


def reference_students(dense, rng, *, noise=0.1, trained_noise=0.3):
    """Student logits to judge a codec with: ``untrained`` (prior 0.01 plus small noise) and
    ``trained`` (the teacher's logits plus noise)."""
    q = np.clip(np.asarray(dense, np.float64), 1e-7, 1.0 - 1e-7)
    prior = np.log(PRIOR / (1.0 - PRIOR))
    return {
        "untrained": prior + rng.normal(0.0, noise, q.shape),
        "trained": np.log(q) - np.log1p(-q) + rng.normal(0.0, trained_noise, q.shape),
    }


def _xlogy(a, b):
    return np.where(a > 0, a * np.log(np.where(b > 0, b, 1.0)), 0.0)
