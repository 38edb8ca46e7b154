"""Training curves (PNG, matplotlib's Agg renderer) from a run's ``metrics.jsonl``: the loss
terms, the learning rate and the val AP (``train.eval_period``) against iterations.

A run's records are the JSON lines the trainer logs: every ``train.log_period`` iterations
``{"iteration", "lr", "loss", "loss_cls", "loss_box"[, "loss_adl"], ...}``, and after each
evaluation ``{"iteration", "val_AP", "val_AP50", ...}``.
"""
from __future__ import annotations

import json
from pathlib import Path

from matplotlib import colormaps

from sadpipe.errors import UserError
from sadpipe.evaluation.plots import new_figure, save_figure
from sadpipe.validation import is_finite_number

LOSS_PREFIX = "loss"                  # "loss" (the total) and its terms "loss_cls", ...
VAL_AP = "val_AP"
LINESTYLES = ("-", "--", ":", "-.")   # one per loss term, cycled
PANELS = ("loss", "learning rate", "val AP (%)")


def read_metrics(path) -> list[dict]:
    """The records of a ``metrics.jsonl``; ``UserError`` naming the file and line if one is
    not a JSON object with an integer ``iteration``."""
    records = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"{path}: line {number}: not JSON") from None
        if not isinstance(record, dict) or not isinstance(record.get("iteration"), int):
            raise UserError(f"{path}: line {number}: expected an object with an integer 'iteration'")
        records.append(record)
    return records


def series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(iterations, values) of the records holding a finite number under ``key``."""
    points = [(r["iteration"], r[key]) for r in records if is_finite_number(r.get(key))]
    return [i for i, _ in points], [v for _, v in points]


def loss_keys(records: list[dict]) -> list[str]:
    """The total loss first, then its terms in the order they first appear."""
    keys = []
    for record in records:
        keys += [k for k in record if k.startswith(LOSS_PREFIX) and k not in keys
                 and is_finite_number(record[k])]
    return sorted(keys, key=lambda k: (k != LOSS_PREFIX, keys.index(k)))


def plot_training_curves(runs: dict[str, list[dict]], path):
    """One PNG, three panels: the loss terms (log scale when all are positive; a colour per
    run, a line style per term), the learning rate and the val AP in %, against iterations.

    Args:
        runs: {name: metrics.jsonl records} (e.g. from :func:`read_metrics`); one run or
            several compared on the same axes.
        path: where the PNG goes (written atomically).

    Returns the matplotlib figure (its axes hold the plotted series)."""
    if not runs:
        raise UserError("plot_training_curves: no runs given")
    fig, axes = new_figure(len(PANELS))
    losses = []
    for n, (name, records) in enumerate(runs.items()):
        colour = colormaps["tab10"](n % 10)
        for k, key in enumerate(loss_keys(records)):
            iterations, values = series(records, key)
            losses += values
            axes[0].plot(iterations, values, color=colour, linestyle=LINESTYLES[k % len(LINESTYLES)],
                         label=f"{name}: {key}" if len(runs) > 1 else key)
        axes[1].plot(*series(records, "lr"), color=colour, label=name)
        iterations, ap = series(records, VAL_AP)
        axes[2].plot(iterations, [100 * v for v in ap], color=colour, marker="o",
                     label=f"{name}  best {100 * max(ap):.1f}" if ap else name)
    for ax, title in zip(axes, PANELS):
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    if losses and min(losses) > 0:
        axes[0].set_yscale("log")
    if not any(line.get_xdata().size for line in axes[2].lines):
        axes[2].text(0.5, 0.5, "no evaluation\n(train.eval_period = 0)", ha="center", va="center",
                     transform=axes[2].transAxes, color="grey")
    save_figure(fig, path)
    return fig
