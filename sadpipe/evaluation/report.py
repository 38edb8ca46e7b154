"""Console tables of evaluation metrics (in percent)."""
from __future__ import annotations

STATS_PER_ROW = 6
CLASSES_PER_ROW = 3
UNDEFINED_TEXT = "n/a"


def format_metrics(metrics: dict) -> str:
    """The ``metrics.json`` dict as a table in percent: the 12 COCO numbers, then per-class
    AP. Undefined values (``None``) show as ``n/a``."""
    lines = [f"COCO box metrics (%): {metrics['num_images']} images, "
             f"{metrics['num_detections']} detections"]
    stats = list(metrics["bbox"].items())
    for start in range(0, len(stats), STATS_PER_ROW):
        row = stats[start:start + STATS_PER_ROW]
        lines.append("  " + "".join(f"{name:>8}" for name, _ in row))
        lines.append("  " + "".join(f"{_percent(value):>8}" for _, value in row))
    lines.extend(_per_class_lines(metrics["per_class_AP"]))
    return "\n".join(lines)


def _per_class_lines(per_class: dict) -> list[str]:
    if not per_class:
        return []
    width = max(len(name) for name in per_class)
    cells = [f"{name:<{width}} {_percent(ap):>6}" for name, ap in per_class.items()]
    lines = ["per-class AP (%):"]
    for start in range(0, len(cells), CLASSES_PER_ROW):
        lines.append("  " + "    ".join(cells[start:start + CLASSES_PER_ROW]))
    return lines


def _percent(value) -> str:
    return UNDEFINED_TEXT if value is None else f"{100 * value:.1f}"
