"""Precision–recall plots (PNG, matplotlib's Agg renderer; no display needed).

A PR curve dict is what :func:`sadpipe.evaluation.coco_eval.pr_curve` returns and
``pr_curve.json`` holds: ``{"iou_thresholds": [T], "recall": [R], "precision": [T lists of R],
...}``.
"""
from __future__ import annotations

import math
from pathlib import Path

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sadpipe.errors import UserError
from sadpipe.fileio import atomic_path, load_json_file
from sadpipe.validation import is_finite_number

# Panels of the comparison plot: (title, IoU threshold or None for the mean over all).
COMPARISON_PANELS = (("IoU 0.50", 0.50), ("IoU 0.75", 0.75), ("IoU 0.50:0.95", None))


def read_pr_curve(path) -> dict:
    """Load and check a ``pr_curve.json``; ``UserError`` naming the file if malformed."""
    pr = load_json_file(path)
    check_pr_curve(pr, path)
    return pr


def check_pr_curve(pr, where) -> None:
    """``pr`` has a recall grid and one precision list of the same length per IoU."""
    if not isinstance(pr, dict):
        raise UserError(f"{where}: expected a PR curve object, found {type(pr).__name__}")
    for key in ("iou_thresholds", "recall", "precision"):
        if not isinstance(pr.get(key), list) or not pr[key]:
            raise UserError(f"{where}: '{key}' must be a non-empty list")
    if not all(map(is_finite_number, pr["iou_thresholds"] + pr["recall"])):
        raise UserError(f"{where}: 'iou_thresholds' and 'recall' must hold numbers")
    if len(pr["precision"]) != len(pr["iou_thresholds"]):
        raise UserError(f"{where}: 'precision' needs one list per IoU threshold")
    for t, values in enumerate(pr["precision"]):
        if not (isinstance(values, list) and len(values) == len(pr["recall"])
                and all(map(is_finite_number, values))):
            raise UserError(f"{where}: precision[{t}] must be {len(pr['recall'])} numbers")


def plot_pr_curve(pr: dict, path) -> None:
    """One model: one curve per IoU threshold, labelled with its AP, saved as PNG."""
    check_pr_curve(pr, "PR curve")
    fig, axes = new_figure(1, width=7)
    count = len(pr["iou_thresholds"])
    for t, (iou, precision) in enumerate(zip(pr["iou_thresholds"], pr["precision"])):
        color = colormaps["viridis"](t / max(count - 1, 1))
        axes[0].plot(pr["recall"], precision, color=color,
                     label=f"IoU {iou:.2f}  AP {100 * _mean(precision):.1f}")
    _decorate(axes[0], f"area {pr.get('area', 'all')}, {pr.get('max_dets', 100)} detections/image")
    axes[0].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1))
    save_figure(fig, path)


def plot_pr_curves(curves: dict[str, dict], path) -> None:
    """Several models on one PNG: a panel each for IoU 0.50, IoU 0.75 and the mean over all
    IoU thresholds, one line per model labelled with its AP.

    Args:
        curves: {model name: PR curve dict} (e.g. from :func:`read_pr_curve`).
        path: where the PNG goes (written atomically).
    """
    if not curves:
        raise UserError("plot_pr_curves: no curves given")
    for name, pr in curves.items():
        check_pr_curve(pr, name)
    fig, axes = new_figure(len(COMPARISON_PANELS))
    for ax, (title, iou) in zip(axes, COMPARISON_PANELS):
        for name, pr in curves.items():
            precision = _panel_precision(pr, iou, name)
            ax.plot(pr["recall"], precision, label=f"{name}  AP {100 * _mean(precision):.1f}")
        _decorate(ax, title)
        ax.legend(fontsize="small", loc="lower left")
    save_figure(fig, path)


def _panel_precision(pr: dict, iou: float | None, name: str) -> list[float]:
    if iou is None:  # point-wise mean over IoU thresholds; its mean is COCO AP
        return [_mean(column) for column in zip(*pr["precision"])]
    for threshold, precision in zip(pr["iou_thresholds"], pr["precision"]):
        if math.isclose(threshold, iou, abs_tol=1e-6):
            return precision
    raise UserError(f"{name}: no precision list for IoU {iou:.2f}")


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def new_figure(panels: int, width: float = 5.0):
    """A figure of ``panels`` axes side by side (no display needed): (figure, axes)."""
    fig = Figure(figsize=(width * panels, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, panels, squeeze=False)[0]


def _decorate(ax, title: str) -> None:
    ax.set_title(title)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)


def save_figure(fig: Figure, path) -> None:
    """The figure as a PNG at ``path``, written atomically."""
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
