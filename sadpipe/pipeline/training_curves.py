"""The students' training curves in the report (``training_curves.png``): loss terms, LR and
val AP against iterations of the baseline and the distilled students, on the same axes.

A student's run is found through the stage that evaluates it: the folder of the checkpoint it
gives ``sadpipe eval`` (``--checkpoint RUN/model_final.pt``) holds the run's
``metrics.jsonl``. A model that was not trained in the pipeline (a given teacher) has none.
"""
from __future__ import annotations

from pathlib import Path

from sadpipe.engine.run_dir import METRICS_FILE
from sadpipe.evaluation.curves import VAL_AP, plot_training_curves, read_metrics, series
from sadpipe.pipeline.report_spec import LIVE_ROLE

CURVES_PNG = "training_curves.png"
STUDENT_ROLES = ("baseline", "distilled", LIVE_ROLE)
CHECKPOINT_OPTION = "--checkpoint"


def find_training_runs(pipeline) -> dict[str, Path]:
    """{student role: its run's metrics.jsonl}, for the students evaluated from a run folder."""
    runs = {}
    for role, entry in pipeline.report.models.items():
        args = list(pipeline.stage(entry.eval_stage).args)
        if role not in STUDENT_ROLES or CHECKPOINT_OPTION not in args[:-1]:
            continue
        metrics = Path(args[args.index(CHECKPOINT_OPTION) + 1]).parent / METRICS_FILE
        if metrics.is_file():
            runs[role] = metrics
    return runs


def write_training_curves(runs: dict[str, Path], titles: dict[str, str], path: Path) -> dict:
    """Draw the runs (``titles``: the legend's name per role) into ``path``; returns what the
    report records per role: ``{"metrics": path, "iterations", "last_loss", "best_val_AP",
    "best_iteration"}`` (None where the run logged no loss or was not evaluated)."""
    records = {role: read_metrics(metrics) for role, metrics in runs.items()}
    plot_training_curves({titles[role]: rows for role, rows in records.items()}, path)
    return {role: {"metrics": str(runs[role]), **summary(rows)} for role, rows in records.items()}


def summary(records: list[dict]) -> dict:
    """Iterations logged, the last logged loss, and the best val AP with its iteration."""
    iterations, losses = series(records, "loss")
    evaluated, ap = series(records, VAL_AP)
    best = max(range(len(ap)), key=ap.__getitem__) if ap else None
    return {"iterations": max((r["iteration"] for r in records), default=0),
            "last_loss": losses[-1] if losses else None,
            "best_val_AP": None if best is None else ap[best],
            "best_iteration": None if best is None else evaluated[best]}
