"""Classification pretraining of a small body on toy crops (``sadpipe pretrain``).

Deterministic on CPU: crops depend only on (seed, image index), the order and flips of
epoch e only on (seed, e), and the weights on the seed. Resumable at epoch granularity: the
state after every epoch is kept next to the output (``OUT.partial``), and a rerun with the
same settings continues from it, ending with the same weights as an uninterrupted run.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sadpipe import zoo
from sadpipe.data import toy, toy_crops
from sadpipe.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from sadpipe.errors import UserError
from sadpipe.fileio import atomic_path
from sadpipe.modeling.classifier import BodyClassifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainSettings:
    """Crops from ``num_images`` pretrain-split images (plus ``num_val_images`` held out for
    the accuracy), SGD with momentum, linear warm-up then cosine decay to zero."""

    arch: str
    seed: int = 0
    num_images: int = 8000
    num_val_images: int = 500
    epochs: int = 6
    batch_size: int = 128
    base_lr: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 5e-5
    warmup_steps: int = 100
    norm: str = "bn"


def pretrain(settings: PretrainSettings, out_path, *, workers: int = 1, command: str = "") -> dict:
    """Train, write the body file atomically to ``out_path``; returns its provenance."""
    out_path = Path(out_path)
    partial = out_path.with_name(out_path.name + ".partial")
    t_start = time.perf_counter()
    torch.manual_seed(settings.seed)
    model = BodyClassifier(settings.arch, toy_crops.NUM_CLASSES, norm=settings.norm)
    model = model.to(memory_format=torch.channels_last)  # 2-4x faster grouped convs on CPU
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.base_lr, momentum=settings.momentum,
                                weight_decay=settings.weight_decay)
    start_epoch, elapsed, history = _resume(partial, settings, model, optimizer)
    train_x, train_y = toy_crops.make_crops(settings.seed, range(settings.num_images), workers=workers)
    val_x, val_y = toy_crops.make_crops(
        settings.seed, range(settings.num_images, settings.num_images + settings.num_val_images),
        workers=workers)
    steps_per_epoch = math.ceil(len(train_y) / settings.batch_size)
    for epoch in range(start_epoch, settings.epochs):
        loss = _train_epoch(model, optimizer, train_x, train_y, settings, epoch, steps_per_epoch)
        accuracy = evaluate(model, val_x, val_y)
        log.info("epoch %d/%d: loss %.4f, held-out accuracy %.2f %%", epoch + 1, settings.epochs,
                 loss, 100 * accuracy)
        history.append({"epoch": epoch + 1, "train_loss": round(loss, 6),
                        "val_accuracy": round(accuracy, 6)})
        _save_partial(partial, settings, model, optimizer, history,
                      elapsed + time.perf_counter() - t_start)
    accuracy = evaluate(model, val_x, val_y)
    provenance = {"command": command, "settings": asdict(settings),
                  "generator_version": toy.GENERATOR_VERSION, "split_id": toy_crops.PRETRAIN_SPLIT_ID,
                  "crop_size": toy_crops.CROP_SIZE, "num_train_crops": int(len(train_y)),
                  "num_val_crops": int(len(val_y)), "val_accuracy": round(float(accuracy), 6),
                  "epochs": history,
                  "wall_time_s": round(elapsed + time.perf_counter() - t_start, 1),
                  "torch_version": str(torch.__version__), "threads": torch.get_num_threads()}
    payload = {"format": zoo.BODY_FORMAT, "version": zoo.BODY_VERSION, "arch": settings.arch,
               "norm": settings.norm, "state_dict": _detached(model.body.state_dict()),
               "provenance": provenance}
    with atomic_path(out_path) as tmp:
        torch.save(payload, tmp)
    partial.unlink(missing_ok=True)
    return provenance


def evaluate(model: BodyClassifier, crops: np.ndarray, labels: np.ndarray, *,
             batch_size: int = 256) -> float:
    """Top-1 accuracy on crops (N, S, S, 3) uint8 with labels (N,)."""
    if len(labels) == 0:
        return float("nan")
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            logits = model(to_tensor(crops[start:start + batch_size]))
            correct += int((logits.argmax(1).numpy() == labels[start:start + batch_size]).sum())
    return correct / len(labels)


def to_tensor(crops: np.ndarray, flips: np.ndarray | None = None) -> torch.Tensor:
    """uint8 crops (N, S, S, 3) → normalised (N, 3, S, S) float32, flipped where ``flips``."""
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div_(255.0)
    if flips is not None and flips.any():
        index = torch.from_numpy(np.flatnonzero(flips))
        x[index] = x[index].flip(-1)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def learning_rate(step: int, total: int, settings: PretrainSettings) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to 0 at ``total``."""
    if step < settings.warmup_steps:
        return settings.base_lr * (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(total - settings.warmup_steps, 1)
    return settings.base_lr * 0.5 * (1 + math.cos(math.pi * progress))


def _train_epoch(model, optimizer, crops, labels, settings: PretrainSettings, epoch: int,
                 steps_per_epoch: int) -> float:
    model.train()
    rng = np.random.default_rng([settings.seed, epoch])
    order = rng.permutation(len(labels))
    flips = rng.random(len(labels)) < 0.5
    total_steps = steps_per_epoch * settings.epochs
    losses = []
    for k in range(steps_per_epoch):
        index = order[k * settings.batch_size:(k + 1) * settings.batch_size]
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(epoch * steps_per_epoch + k, total_steps, settings)
        loss = F.cross_entropy(model(to_tensor(crops[index], flips[index])),
                               torch.from_numpy(labels[index]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses))


def _save_partial(path: Path, settings, model, optimizer, history: list, elapsed: float) -> None:
    state = {"settings": asdict(settings), "history": history, "elapsed_s": elapsed,
             "model": _detached(model.state_dict()), "optimizer": optimizer.state_dict()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _resume(path: Path, settings, model, optimizer) -> tuple[int, float, list]:
    """(epochs already done, seconds spent, per-epoch history) from a partial run with the
    same settings."""
    if not path.exists():
        return 0, 0.0, []
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - an unreadable partial file is a user error
        raise UserError(f"{path}: unreadable partial pretraining state ({type(err).__name__}); "
                        "delete it to start over") from None
    if state.get("settings") != asdict(settings):
        raise UserError(f"{path}: partial pretraining state of other settings; delete it or "
                        "use the same options")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    history = list(state["history"])
    log.info("resumed from %s after epoch %d", path, len(history))
    return len(history), float(state["elapsed_s"]), history


def _detached(state: dict) -> dict:
    return {k: v.detach().clone() for k, v in state.items()}
