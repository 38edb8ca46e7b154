"""COCO box evaluation with pycocotools: metrics.json, the precision–recall curve, a table.

Outputs in ``out_dir`` (each written atomically; ``metrics.json`` last, after everything was
validated and computed):

* ``metrics.json``: ``{"bbox": {stat name: fraction}, "per_class_AP": {category name:
  fraction}, "num_images": int, "num_detections": int}``. Values are unrounded fractions;
  ``null`` where COCO leaves a metric undefined (no ground truth in that area range, or for
  that class).
* ``pr_curve.json``: the class-averaged precision at each point of the recall grid, one
  list per IoU threshold (area "all", 100 detections per image); see :func:`pr_curve`.
* ``pr_curve.png``: the same curves, drawn.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import click
import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from sadpipe.data.coco import check_fields, read_coco_json
from sadpipe.errors import UserError
from sadpipe.evaluation.plots import plot_pr_curve
from sadpipe.evaluation.report import format_metrics
from sadpipe.fileio import load_json_file, write_json
from sadpipe.validation import is_finite_number, is_int, show_value

# The 12 numbers of COCOeval.stats, in its order.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
PR_AREA = "all"
PR_MAX_DETS = 100
UNDEFINED = -1  # COCOeval's marker for "no ground truth here"
DETECTION_FIELDS = {
    "image_id": (is_int, "an integer"),
    "category_id": (is_int, "an integer"),
    "bbox": (lambda v: isinstance(v, list) and len(v) == 4 and all(map(is_finite_number, v))
             and v[2] >= 0 and v[3] >= 0,
             "[x, y, width, height] with width, height >= 0"),
    "score": (is_finite_number, "a finite number"),
}


def evaluate_detections(annotations, detections, out_dir, *, quiet=False,
                        source=None, inference: dict | None = None) -> dict:
    """Evaluate COCO-format detections against ground truth and write the results.

    Args:
        annotations: path of the ground-truth COCO json (dataset format).
        detections: COCO result dicts ``{"image_id", "category_id", "bbox": [x, y, w, h],
            "score"}``, or the path of a results json holding such a list.
        out_dir: folder for ``metrics.json``, ``pr_curve.json``, ``pr_curve.png`` (created).
        quiet: do not print the table of metrics.
        source: how to name an in-memory ``detections`` list in error messages.
        inference: the model's inference speed (``{"images", "seconds", "images_per_s",
            "precision"}`` from :func:`sadpipe.engine.inference.detect_dataset`), stored and printed as is.

    Returns the metrics dict written to ``metrics.json``. Bad input (either file, a detection
    with an unknown image or category id) raises ``UserError`` before anything is written.
    """
    gt_data = read_coco_json(annotations)
    if isinstance(detections, (str, Path)):
        source, detections = str(detections), read_detections(detections)
    check_detections(detections, gt_data, source=source or "detections",
                     annotations=annotations)
    check_out_dir(out_dir)
    coco_eval = run_cocoeval(gt_data, detections, annotations=annotations)
    metrics = summarize(coco_eval, gt_data, detections)
    if inference is not None:
        metrics["inference"] = inference
    pr = pr_curve(coco_eval)
    out_dir = Path(out_dir)
    write_json(out_dir / "pr_curve.json", pr)
    plot_pr_curve(pr, out_dir / "pr_curve.png")
    write_json(out_dir / "metrics.json", metrics)
    if not quiet:
        click.echo(format_metrics(metrics))
        if inference is not None:
            click.echo(f"inference: {inference['images_per_s']:.1f} images/s (network and "
                       "post-processing; no image reading or COCOeval)")
    return metrics


def summarize(coco_eval: COCOeval, gt_data: dict, detections: list) -> dict:
    """The metrics dict of ``metrics.json``: COCO stats as fractions (None where undefined),
    per-class AP, image and detection counts."""
    return {
        "bbox": dict(zip(STAT_NAMES, map(_defined, coco_eval.stats))),
        "per_class_AP": per_class_ap(coco_eval, gt_data["categories"]),
        "num_images": len(gt_data["images"]),
        "num_detections": len(detections),
    }


def read_detections(path) -> list:
    """The list in a COCO results json (fields are checked by :func:`check_detections`)."""
    detections = load_json_file(path)
    if not isinstance(detections, list):
        raise UserError(f"{path}: expected a JSON list of detections, "
                        f"found {show_value(detections)}")
    return detections


def check_detections(detections: list, gt_data: dict, *, source: str, annotations) -> None:
    """Every detection has the four COCO result fields, with an image id and a category id
    of ``gt_data``; otherwise ``UserError`` naming ``source`` and the entry."""
    image_ids = {image["id"] for image in gt_data["images"]}
    category_ids = {category["id"] for category in gt_data["categories"]}
    for i, det in enumerate(detections):
        field = f"[{i}]"
        check_fields(det, field, source, DETECTION_FIELDS)
        if det["image_id"] not in image_ids:
            raise UserError(f"{source}: {field}.image_id {det['image_id']} is not an image "
                            f"of {annotations}")
        if det["category_id"] not in category_ids:
            raise UserError(f"{source}: {field}.category_id {det['category_id']} is not a "
                            f"category of {annotations}")


def check_out_dir(out_dir) -> None:
    """``out_dir`` is a folder or can become one."""
    out_dir = Path(out_dir)
    existing = next((p for p in (out_dir, *out_dir.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UserError(f"{out_dir}: cannot create the output folder, "
                        f"{existing} is a file")


def run_cocoeval(gt_data: dict, detections: list, *, annotations="ground truth") -> COCOeval:
    """COCOeval (iouType "bbox") evaluated, accumulated and summarized; pycocotools'
    progress prints are swallowed. ``gt_data`` must come from :func:`read_coco_json`."""
    if not any(ann["iscrowd"] == 0 for ann in gt_data["annotations"]):
        raise UserError(f"{annotations}: no (non-crowd) boxes in 'annotations', "
                        f"nothing to evaluate against")
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_data
        gt.createIndex()
        results = _load_results(gt, detections)
        coco_eval = COCOeval(gt, results, iouType="bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


def _load_results(gt: COCO, detections: list) -> COCO:
    """``gt.loadRes`` on copies (it edits its input); it cannot take an empty list."""
    if detections:
        return gt.loadRes([dict(det) for det in detections])
    results = COCO()
    results.dataset = {"images": list(gt.dataset["images"]),
                       "categories": list(gt.dataset["categories"]), "annotations": []}
    results.createIndex()
    return results


def per_class_ap(coco_eval: COCOeval, categories: list[dict]) -> dict[str, float | None]:
    """AP (IoU 0.50:0.95, area all, 100 detections) per category name; None for a category
    without ground truth."""
    precision = _pr_slice(coco_eval)  # (T, R, K)
    names = {c["id"]: c["name"] for c in categories}
    out = {}
    for k, category_id in enumerate(coco_eval.params.catIds):
        values = precision[:, :, k]
        values = values[values > UNDEFINED]
        out[names[category_id]] = float(values.mean()) if values.size else None
    return out


def pr_curve(coco_eval: COCOeval) -> dict:
    """The class-averaged precision–recall curves that COCO AP integrates.

    Returns ``{"iou_thresholds": [T], "recall": [R], "precision": [T lists of R], "area":
    "all", "max_dets": 100}`` with T = 10 (0.50:0.95) and R = 101 (0:0.01:1). Classes without
    ground truth are left out of the average; the mean of ``precision[t]`` is AP at
    ``iou_thresholds[t]``.
    """
    precision = _pr_slice(coco_eval)  # (T, R, K)
    valid = precision > UNDEFINED
    counts = valid.sum(axis=2)
    sums = np.where(valid, precision, 0.0).sum(axis=2)
    mean = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    params = coco_eval.params
    return {
        "iou_thresholds": [float(t) for t in params.iouThrs],
        "recall": [float(r) for r in params.recThrs],
        "precision": mean.tolist(),
        "area": PR_AREA,
        "max_dets": PR_MAX_DETS,
    }


def _pr_slice(coco_eval: COCOeval) -> np.ndarray:
    """precision (T, R, K) at area "all" and 100 detections per image."""
    params = coco_eval.params
    area = params.areaRngLbl.index(PR_AREA)
    max_dets = params.maxDets.index(PR_MAX_DETS)
    return coco_eval.eval["precision"][:, :, :, area, max_dets]


def _defined(value) -> float | None:
    return None if value == UNDEFINED else float(value)
