"""Learning-rate schedule of the release: linear warm-up, then steps of ×gamma."""
from __future__ import annotations

import bisect


def learning_rate(iteration: int, *, base_lr: float, warmup_iters: int, warmup_factor: float,
                  steps: list[int], gamma: float) -> float:
    """LR at ``iteration`` (0-based): warm-up from ``base_lr × warmup_factor`` to ``base_lr``
    over ``warmup_iters``, multiplied by ``gamma`` at each step in ``steps``."""
    lr = base_lr * gamma ** bisect.bisect_right(steps, iteration)
    if iteration < warmup_iters:
        alpha = iteration / warmup_iters
        lr *= warmup_factor * (1 - alpha) + alpha
    return lr
