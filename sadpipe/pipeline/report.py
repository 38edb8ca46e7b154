"""The run's report: ``report.json``, ``report.md`` and ``pr_curves.png`` in the workdir.

* the paper's main-results table: Student model | Baseline mAP | Teacher model | Baseline mAP |
  Student mAP after distillation (COCO AP at IoU 0.50:0.95);
* AP, AP50, AP75, APs, APm, APl of the three models (from each ``sadpipe eval`` metrics.json);
* the teacher cache's size per view (from each ``sadpipe cache-logits`` manifest.json:
  ``totals``: samples, views, shard bytes, stored and dense fp16 bytes per view);
* wall time per stage (from state.json: summed over the attempts that made the outputs);
* the three models' precision-recall curves on one PNG;
* a gallery (``gallery.png``, :mod:`sadpipe.pipeline.gallery`) of a few validation images as
  each model sees them and of the teacher's pseudo-labels, when the stages drew pictures;
* the students' training curves (``training_curves.png``,
  :mod:`sadpipe.pipeline.training_curves`), when they were trained in the pipeline.

Metrics in ``report.json`` are fractions (as in metrics.json); ``report.md`` shows percent.
"""
from __future__ import annotations

import time
from pathlib import Path

from sadpipe.errors import UserError
from sadpipe.evaluation.plots import plot_pr_curves, read_pr_curve
from sadpipe.fileio import atomic_path, load_json_file, write_json
from sadpipe.pipeline.display import format_duration
from sadpipe.pipeline.gallery import GALLERY_PNG, find_pictures, write_gallery
from sadpipe.pipeline.report_spec import CACHE_OUTPUT, LIVE_ROLE, ROLES
from sadpipe.pipeline.spec import Pipeline
from sadpipe.pipeline.state import RunState
from sadpipe.pipeline.training_curves import CURVES_PNG, find_training_runs, write_training_curves
from sadpipe.pipeline.work import UNIT_NAMES, image_counts, stage_work
from sadpipe.validation import is_finite_number

REPORT_JSON, REPORT_MD, PR_PNG = "report.json", "report.md", "pr_curves.png"
MODEL_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
ROLE_TITLES = {"teacher": "teacher", "baseline": "baseline student",
               "distilled": "distilled student (SAD)",
               LIVE_ROLE: "distilled student (SAD, live teacher)"}
UNDEFINED = "n/a"
CACHE_COUNTS = ("samples", "views", "shard_bytes")      # manifest totals read for the report
CACHE_SIZES = ("payload_bytes_per_view", "dense_fp16_bytes_per_view")


def write_report(pipeline: Pipeline, state: RunState) -> list[Path]:
    """Write the report files (each atomically): report.json, report.md, pr_curves.png,
    when the stages drew pictures gallery.png, and when the students were trained in the
    pipeline training_curves.png (a stale picture is removed); returns their paths."""
    pictures = find_pictures(pipeline)
    runs = find_training_runs(pipeline)
    curves_png = pipeline.workdir / CURVES_PNG
    training = write_training_curves(runs, ROLE_TITLES, curves_png) if runs else None
    if training is None and curves_png.exists():
        curves_png.unlink()
    report = build_report(pipeline, state, pictures=pictures, training=training)
    curves = {ROLE_TITLES[role]:
              read_pr_curve(pipeline.stage(entry.eval_stage).outputs["pr_curve"])
              for role, entry in pipeline.report.models.items()}
    paths = [pipeline.workdir / name for name in (REPORT_JSON, REPORT_MD, PR_PNG)]
    plot_pr_curves(curves, paths[2])
    gallery = pipeline.workdir / GALLERY_PNG
    if pictures is not None:
        write_gallery(pictures, gallery, [ROLE_TITLES[role] for role in ROLES])
        paths.append(gallery)
    elif gallery.exists():
        gallery.unlink()
    if training is not None:
        paths.append(curves_png)
    with atomic_path(paths[1]) as tmp:
        tmp.write_text(format_markdown(report))
    write_json(paths[0], report)
    return paths


def build_report(pipeline: Pipeline, state: RunState, *, pictures: dict | None = None,
                 training: dict | None = None) -> dict:
    """The report as a JSON-able dict (what ``report.json`` holds); ``pictures``: the
    gallery's, from :func:`sadpipe.pipeline.gallery.find_pictures`; ``training``: the
    students' runs, from :func:`sadpipe.pipeline.training_curves.write_training_curves`."""
    spec = pipeline.report
    models = {role: {"model": entry.model, "stage": entry.eval_stage,
                     **model_metrics(pipeline.stage(entry.eval_stage).outputs["metrics"])}
              for role, entry in spec.models.items()}
    stages = stage_times(pipeline, state)
    return {
        "pipeline": pipeline.name,
        "workdir": str(pipeline.workdir),
        "written_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "main_results": main_results(models),
        "paper": spec.paper,
        "models": models,
        "caches": {name: cache_sizes(pipeline.stage(name).outputs[CACHE_OUTPUT])
                   for name in spec.caches},
        "stages": stages,
        "total_wall_s": round(sum(s["wall_s"] or 0.0 for s in stages), 3),
        "gallery": gallery_files(pictures, pipeline.workdir),
        "training_curves": None if training is None else {"file": CURVES_PNG, "runs": training},
    }


def gallery_files(pictures: dict | None, workdir: Path) -> dict | None:
    """What ``gallery.png`` shows, paths relative to ``workdir``: ``{"file": "gallery.png",
    "val": [{"image", "teacher", "baseline", "distilled"}], "pseudo_labels": [...]}``; None
    without pictures."""
    if pictures is None:
        return None
    val = [{key: _in_workdir(value, workdir) for key, value in row.items()}
           for row in pictures["val"]]
    return {"file": GALLERY_PNG, "val": val,
            "pseudo_labels": [_in_workdir(p, workdir) for p in pictures["pseudo_labels"]]}


def _in_workdir(path, workdir: Path) -> str:
    """``path`` relative to ``workdir`` when inside it (a bare file name stays as it is)."""
    path = Path(path)
    try:
        return path.relative_to(workdir).as_posix()
    except ValueError:
        return str(path)


def model_metrics(path) -> dict:
    """AP, AP50, AP75, APs, APm, APl (fractions or None) from a ``sadpipe eval`` metrics.json,
    and its inference images/s when recorded (None otherwise)."""
    metrics = load_json_file(path)
    bbox = metrics.get("bbox") if isinstance(metrics, dict) else None
    if not isinstance(bbox, dict):
        raise UserError(f"{path}: bbox: missing; expected a sadpipe eval metrics file")
    for name in MODEL_STATS:
        if name not in bbox or not (bbox[name] is None or is_finite_number(bbox[name])):
            raise UserError(f"{path}: bbox.{name}: expected a number or null")
    speed = (metrics.get("inference") or {}).get("images_per_s")
    return {**{name: bbox[name] for name in MODEL_STATS},
            "images_per_s": speed if is_finite_number(speed) else None}


def main_results(models: dict) -> dict:
    """The paper's table row, plus the two differences the SAD claim is about (AP points)."""
    teacher, baseline, distilled = (models[role] for role in ROLES)
    main = {
        "student_model": baseline["model"],
        "student_baseline_AP": baseline["AP"],
        "teacher_model": teacher["model"],
        "teacher_baseline_AP": teacher["AP"],
        "student_distilled_AP": distilled["AP"],
        "gain_over_baseline_AP": _difference(distilled["AP"], baseline["AP"]),
        "gap_to_teacher_AP": _difference(distilled["AP"], teacher["AP"]),
    }
    if LIVE_ROLE in models:
        main["student_distilled_live_AP"] = models[LIVE_ROLE]["AP"]
        main["cache_vs_live_AP"] = _difference(distilled["AP"], models[LIVE_ROLE]["AP"])
    return main


def cache_sizes(path) -> dict:
    """Size of one teacher cache from its shard manifest (``totals``): ``{"samples", "views",
    "bytes" (shards on disk), "bytes_per_view" (stored teacher scores per cached view),
    "dense_fp16_bytes_per_view", "compression_vs_fp16"}``."""
    manifest = load_json_file(path)
    totals = manifest.get("totals") if isinstance(manifest, dict) else None
    if not isinstance(totals, dict):
        raise UserError(f"{path}: totals: missing; expected a sadpipe shard manifest")
    for key in CACHE_COUNTS:
        if not _is_count(totals.get(key)):
            raise UserError(f"{path}: totals.{key}: expected a count")
    for key in CACHE_SIZES:
        if not is_finite_number(totals.get(key)) or totals[key] < 0:
            raise UserError(f"{path}: totals.{key}: expected a number of bytes")
    payload, dense = totals["payload_bytes_per_view"], totals["dense_fp16_bytes_per_view"]
    return {"samples": totals["samples"], "views": totals["views"],
            "bytes": totals["shard_bytes"], "bytes_per_view": payload,
            "dense_fp16_bytes_per_view": dense,
            "compression_vs_fp16": dense / payload if payload else None}


def stage_times(pipeline: Pipeline, state: RunState) -> list[dict]:
    """Per stage: status, attempts, wall time, and its work (images generated, trained on or
    run through the teacher; views cached) with the rate it ran at."""
    rows = []
    for stage in pipeline.stages:
        record = state.record(stage.name) or {}
        wall = None if stage.given else record.get("wall_s")
        work, unit = stage_work_done(pipeline, stage)
        rows.append({"name": stage.name, "command": stage.command or "",
                     "status": "given" if stage.given else record.get("status", "not run"),
                     "attempts": 0 if stage.given else record.get("attempts", 0),
                     "wall_s": wall, "work": work, "unit": unit,
                     "per_s": work / wall if work and wall else None})
    return rows


def stage_work_done(pipeline: Pipeline, stage) -> tuple[float | None, str]:
    """(units, unit name) of the work a stage did; cached views are read from its manifest."""
    if stage.given or stage.command not in UNIT_NAMES:
        return None, ""
    unit = UNIT_NAMES[stage.command]
    if stage.command == "cache-logits":
        manifest = stage.outputs.get("manifest")
        if manifest is None or not manifest.is_file():
            return None, unit
        return float(load_json_file(manifest)["totals"]["views"]), unit
    try:
        return stage_work(stage, image_counts(pipeline), pipeline)[1], unit
    except (OSError, ValueError, KeyError):
        return None, unit


# ---- markdown

def format_markdown(report: dict) -> str:
    models = report["models"]
    lines = [f"# SAD run report: {report['pipeline']}", "",
             f"Workdir `{report['workdir']}`, written {report['written_at']}.", "",
             "## Main results (COCO box mAP, %)", "",
             *main_table(report["main_results"], report.get("paper")), "",
             "## Per model (%)", "",
             "| Model | Role | " + " | ".join(MODEL_STATS) + " | Inference images/s |",
             "|---|---|" + "---:|" * (len(MODEL_STATS) + 1)]
    for role in [*ROLES, LIVE_ROLE]:
        if role not in models:
            continue
        row = models[role]
        cells = " | ".join(_pct(row[name]) for name in MODEL_STATS)
        speed = UNDEFINED if row.get("images_per_s") is None else f"{row['images_per_s']:.1f}"
        lines.append(f"| {row['model']} | {ROLE_TITLES[role]} | {cells} | {speed} |")
    lines += ["", "## Teacher cache", ""] + _cache_lines(report["caches"])
    lines += ["", "## Wall time per stage", "", "| # | Stage | Command | Status | Attempts | "
              "Wall time | Work | Rate |", "|---:|---|---|---|---:|---:|---:|---:|"]
    for n, row in enumerate(report["stages"], 1):
        wall = "" if row["wall_s"] is None else format_duration(row["wall_s"])
        work = "" if row.get("work") is None else f"{row['work']:,.0f} {row['unit']}"
        rate = "" if row.get("per_s") is None else f"{row['per_s']:.1f} {row['unit']}/s"
        lines.append(f"| {n} | {row['name']} | {row['command']} | {row['status']} | "
                     f"{row['attempts']} | {wall} | {work} | {rate} |")
    lines += [f"| | total | | | | {format_duration(report['total_wall_s'])} | | |", "",
              f"![precision-recall curves of the three models]({PR_PNG})", ""]
    lines += _curves_lines(report.get("training_curves"))
    lines += _gallery_lines(report.get("gallery"))
    return "\n".join(lines)


def _curves_lines(curves: dict | None) -> list[str]:
    if curves is None:
        return []
    lines = ["## Training curves", "", "Loss terms, learning rate and val AP (`train.eval_period`; "
             "none when 0) of the students against iterations.", "",
             "| Student | Iterations | Last loss | Best val AP | At iteration |",
             "|---|---:|---:|---:|---:|"]
    for role, run in curves["runs"].items():
        loss = UNDEFINED if run["last_loss"] is None else f"{run['last_loss']:.4f}"
        at = UNDEFINED if run["best_iteration"] is None else str(run["best_iteration"])
        lines.append(f"| {ROLE_TITLES[role]} | {run['iterations']} | {loss} | "
                     f"{_pct(run['best_val_AP'])} | {at} |")
    return lines + ["", f"![training curves of the students]({curves['file']})", ""]


def _gallery_lines(gallery: dict | None) -> list[str]:
    if gallery is None:
        return []
    what = []
    if gallery["val"]:
        what.append(f"{len(gallery['val'])} validation images (rows) as each model sees them "
                    "(columns): detections solid, labelled with class and score, ground "
                    "truth dashed black and white")
    if gallery["pseudo_labels"]:
        what.append("a row of unlabeled images with the teacher's pseudo-labels: kept boxes "
                    "solid, weaker ones faint")
    text = "; ".join(what)
    return ["## Pictures", "", text[0].upper() + text[1:] + ".", "",
            f"![detections of the three models and the pseudo-labels]({gallery['file']})", ""]


def main_table(main: dict, paper: dict | None = None) -> list[str]:
    """The paper's main-results table for this run (markdown), the paper's own row beside it
    when given, and the differences (and cache vs live teacher when measured)."""
    lines = [
        "| Student model | Baseline mAP | Teacher model | Baseline mAP | "
        "Student mAP after distillation |",
        "|---|---:|---|---:|---:|",
        f"| {main['student_model']} | {_pct(main['student_baseline_AP'])} | "
        f"{main['teacher_model']} | {_pct(main['teacher_baseline_AP'])} | "
        f"{_pct(main['student_distilled_AP'])} |"]
    if paper is not None:
        lines.append(f"| {paper['student_model']} (the paper, COCO) | {paper['student_baseline']:.1f} | "
                     f"{paper['teacher_model']} | {paper['teacher_baseline']:.1f} | "
                     f"{paper['distilled']:.1f} |")
    lines += ["", f"Distilled student vs baseline student: {_points(main['gain_over_baseline_AP'])} "
              f"AP; vs teacher: {_points(main['gap_to_teacher_AP'])} AP."]
    if paper is not None:
        lines[-1] += (f" The paper: {paper['distilled'] - paper['student_baseline']:+.1f} AP; "
                      f"{paper['distilled'] - paper['teacher_baseline']:+.1f} AP.")
    if "cache_vs_live_AP" in main:
        lines.append(f"Distilled from the cache vs from the live teacher (same seed and "
                     f"schedule): {_points(main['cache_vs_live_AP'])} AP "
                     f"({_pct(main['student_distilled_AP'])} vs "
                     f"{_pct(main['student_distilled_live_AP'])}).")
    return lines


def _cache_lines(caches: dict) -> list[str]:
    if not caches:
        return ["No cache stages in this pipeline."]
    lines = ["| Cache | Samples | Views | On disk | Per view | Dense fp16 per view | "
             "Compression |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, c in caches.items():
        ratio = c["compression_vs_fp16"]
        ratio = UNDEFINED if ratio is None else f"{ratio:.1f}x"
        lines.append(f"| {name} | {c['samples']} | {c['views']} | {human_bytes(c['bytes'])} | "
                     f"{human_bytes(c['bytes_per_view'])} | "
                     f"{human_bytes(c['dense_fp16_bytes_per_view'])} | {ratio} |")
    return lines


def human_bytes(count: float) -> str:
    """Decimal units: ``1534`` → ``1.5 kB``."""
    units = ("B", "kB", "MB", "GB", "TB")
    step = 0
    while count >= 1000 and step < len(units) - 1:
        count, step = count / 1000, step + 1
    return f"{count:.0f} B" if step == 0 else f"{count:.1f} {units[step]}"


def _pct(value) -> str:
    return UNDEFINED if value is None else f"{100 * value:.1f}"


def _points(value) -> str:
    return UNDEFINED if value is None else f"{100 * value:+.1f}"


def _difference(a, b):
    return None if a is None or b is None else a - b


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
