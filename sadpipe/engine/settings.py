"""Typed views of a train config's sections, built once from the validated config dict
(detectron2's ``from_config`` pattern): the training code reads attributes, never
``cfg["..."]`` lookups deep inside a step. Field names are the config keys (README, "Config
reference"); their defaults, the paper's, live in one place: :data:`sadpipe.config.DEFAULTS`."""
from __future__ import annotations

from dataclasses import dataclass

from sadpipe.engine.schedule import learning_rate


@dataclass(frozen=True)
class SolverSettings:
    """``[solver]``: optimizer, batch and the release's LR schedule (warm-up, steps)."""

    optimizer: str
    images_per_batch: int
    base_lr: float
    momentum: float
    weight_decay: float
    warmup_iters: int
    warmup_factor: float
    max_iter: int
    steps: tuple[int, ...]
    gamma: float
    clip_grad_norm: float
    amp: str

    @classmethod
    def from_config(cls, cfg: dict) -> SolverSettings:
        return cls(**dict(cfg["solver"], steps=tuple(cfg["solver"]["steps"])))

    def learning_rate(self, iteration: int) -> float:
        """LR at ``iteration`` (0-based), :func:`sadpipe.engine.schedule.learning_rate`."""
        return learning_rate(iteration, base_lr=self.base_lr, warmup_iters=self.warmup_iters,
                             warmup_factor=self.warmup_factor, steps=list(self.steps),
                             gamma=self.gamma)


@dataclass(frozen=True)
class LossSettings:
    """``[loss]``: the detection losses (focal loss on classes, smooth L1 on boxes)."""

    focal_alpha: float
    focal_gamma: float
    smooth_l1_beta: float

    @classmethod
    def from_config(cls, cfg: dict) -> LossSettings:
        return cls(**cfg["loss"])


@dataclass(frozen=True)
class DistillSettings:
    """``[distill]``: the adaptive distillation loss and the order of batch sources."""

    alpha: float
    gamma: float
    beta: float
    normalizer_power: float
    temperature: float
    weight: float
    pattern: tuple[str, ...]
    teacher_precision: str

    @classmethod
    def from_config(cls, cfg: dict) -> DistillSettings:
        return cls(**dict(cfg["distill"], pattern=tuple(cfg["distill"]["pattern"])))


@dataclass(frozen=True)
class TrainSettings:
    """``[train]``: seed, device, and how often the run logs, checkpoints and evaluates."""

    seed: int
    device: str
    log_period: int
    checkpoint_period: int
    keep_checkpoints: int
    eval_period: int

    @classmethod
    def from_config(cls, cfg: dict) -> TrainSettings:
        return cls(**cfg["train"])
