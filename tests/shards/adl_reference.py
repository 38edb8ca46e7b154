"""Independent float64 numpy reference of the adaptive distillation loss (cuda_ops.reference's formula),
for judging the codec. Written from the formula only: the gradient w.r.t. the student logits
comes from complex-step differentiation of the same element-wise expression (each element
depends on its own logit only; the normaliser comes from the dense scores), not from a
hand-derived formula."""
import numpy as np

ALPHA, GAMMA, BETA, THETA = 0.5, 2.0, 0.0, 1.8
STEP = 1e-30  # complex step: exact derivative up to rounding


def adl_elements(q, x):
    """ADW * [α q (-log p) + (1-α)(1-q)(-log(1-p))] per element; x may be complex."""
    log_p = -np.log1p(np.exp(-x))
    log_1mp = -np.log1p(np.exp(x))
    ce = -q * log_p - (1 - q) * log_1mp
    entropy = -np.where(q > 0, q * np.log(np.where(q > 0, q, 1)), 0) \
        - np.where(q < 1, (1 - q) * np.log(np.where(q < 1, 1 - q, 1)), 0)
    adw = (1 - np.exp(-(ce - BETA * entropy))) ** GAMMA
    return adw * (ALPHA * q * -log_p + (1 - ALPHA) * (1 - q) * -log_1mp)


def normalizer(q_dense):
    return max(float(np.sum(np.asarray(q_dense, np.float64) ** THETA)), 1.0)


def adl(q, x, n):
    """(loss, d loss / d x) for teacher scores q and student logits x, normaliser n."""
    elements = adl_elements(np.asarray(q, np.float64), np.asarray(x, np.float64) + 1j * STEP)
    return float(np.sum(elements.real)) / n, elements.imag / STEP / n


def errors(dense_result, decoded, x, n):
    """(relative ADL error, gradient cosine) of decoded scores against ``dense_result`` =
    adl(dense, x, n)."""
    loss, grad = dense_result
    loss_hat, grad_hat = adl(decoded, x, n)
    cosine = float(np.sum(grad * grad_hat) / np.linalg.norm(grad) / np.linalg.norm(grad_hat))
    return (loss_hat - loss) / loss, cosine


def students(dense, seed):
    """Untrained (prior 0.01, noise 0.1) and trained (teacher logits, noise 0.3) students."""
    rng = np.random.default_rng(seed)
    q = np.clip(np.asarray(dense, np.float64), 1e-7, 1 - 1e-7)
    return {"untrained": np.log(0.01 / 0.99) + rng.normal(0, 0.1, q.shape),
            "trained": np.log(q / (1 - q)) + rng.normal(0, 0.3, q.shape)}
