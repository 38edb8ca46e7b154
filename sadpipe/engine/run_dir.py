"""A training run's folder: resolved config, metrics.jsonl, checkpoints, model_final.pt, and
with ``train.eval_period`` model_best.pt; curves.png draws metrics.jsonl."""
from __future__ import annotations

import json
from pathlib import Path

from sadpipe.config import dump_toml, load_config
from sadpipe.errors import UserError
from sadpipe.fileio import atomic_path

CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.jsonl"
FINAL_MODEL = "model_final.pt"
BEST_MODEL = "model_best.pt"        # the best val AP so far (train.eval_period)
CURVES_FILE = "curves.png"          # loss terms, LR and val AP against iterations
CHECKPOINT_DIR = "checkpoints"


class RunDir:
    def __init__(self, path):
        self.path = Path(path)

    @property
    def final_model(self) -> Path:
        return self.path / FINAL_MODEL

    @property
    def best_model(self) -> Path:
        return self.path / BEST_MODEL

    @property
    def curves(self) -> Path:
        return self.path / CURVES_FILE

    def prepare(self, cfg: dict, *, resume: bool) -> None:
        """Create the folder, or check that it holds this same run when resuming. A folder
        holding another run is refused."""
        config_path = self.path / CONFIG_FILE
        text = dump_toml(cfg)
        if config_path.exists():
            if not resume:
                raise UserError(f"{self.path}: already holds a training run; pass --resume to "
                                "continue it or choose another --out")
            if config_path.read_text() != text and load_config(config_path) != cfg:
                # (a run written before a config key existed holds it at its default)
                key = _first_difference(config_path.read_text(), text)
                raise UserError(f"{self.path}: holds a run with a different config ({key}); "
                                "choose another --out")
            return
        if self.path.exists() and any(self.path.iterdir()) and not resume:
            raise UserError(f"{self.path}: exists and is not an empty run folder; choose another --out")
        self.path.mkdir(parents=True, exist_ok=True)
        with atomic_path(config_path) as tmp:
            tmp.write_text(text)

    def checkpoint_path(self, iteration: int) -> Path:
        return self.path / CHECKPOINT_DIR / f"iter_{iteration:07d}.pt"

    def checkpoints(self) -> list[Path]:
        return sorted((self.path / CHECKPOINT_DIR).glob("iter_*.pt"))

    def prune_checkpoints(self, keep: int) -> None:
        for old in self.checkpoints()[:-keep] if keep > 0 else []:
            old.unlink()

    def truncate_metrics(self, iteration: int) -> None:
        """Drop log lines past ``iteration`` (written after the checkpoint we resume from)."""
        path = self.path / METRICS_FILE
        if not path.exists():
            return
        kept = [line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line)["iteration"] <= iteration]
        with atomic_path(path) as tmp:
            tmp.write_text("".join(line + "\n" for line in kept))

    def log_metrics(self, record: dict) -> None:
        with open(self.path / METRICS_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict]:
        """The records of metrics.jsonl (none before the first is logged)."""
        from sadpipe.evaluation.curves import read_metrics  # matplotlib: only when drawn
        path = self.path / METRICS_FILE
        return read_metrics(path) if path.exists() else []

    def write_curves(self) -> None:
        """curves.png from metrics.jsonl (atomically; nothing before the first record)."""
        from sadpipe.evaluation.curves import plot_training_curves
        records = self.read_metrics()
        if records:
            plot_training_curves({self.path.name: records}, self.curves)


def _first_difference(old: str, new: str) -> str:
    section = ""
    for a, b in zip(old.splitlines(), new.splitlines()):
        if a.startswith("["):
            section = a.strip("[]")
        if a != b:
            key = a.split("=")[0].strip()
            have, want = a.split("=", 1)[-1].strip(), b.split("=", 1)[-1].strip()
            return f"{section}.{key}: {have} vs {want}"
    return "config differs"
