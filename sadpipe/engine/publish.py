"""Release copies of trained checkpoints (``sadpipe publish``)."""
from __future__ import annotations

import torch

from sadpipe.checkpoint import load_checkpoint
from sadpipe.data.coco import CocoDataset, read_coco_json
from sadpipe.engine.inference import detect_dataset
from sadpipe.engine.trainer import dataset_provenance
from sadpipe.evaluation.coco_eval import run_cocoeval, summarize
from sadpipe.fileio import atomic_path, file_sha256


def evaluate_checkpoint(checkpoint, annotations, images, *, batch_size: int = 4) -> dict:
    """COCO metrics of ``checkpoint`` on (annotations, images), as ``sadpipe eval`` computes
    them: {"bbox": {AP, AP50, ...}, "per_class_AP", "num_detections"}."""
    dataset = CocoDataset(annotations, images)
    detections = detect_dataset(checkpoint, dataset, batch_size=batch_size, progress=False)
    gt_data = read_coco_json(annotations)
    return summarize(run_cocoeval(gt_data, detections, annotations=annotations), gt_data, detections)


def publish(checkpoint, annotations, images, out_path, *, batch_size: int = 4) -> dict:
    """Evaluate ``checkpoint`` on (annotations, images) and write it to ``out_path`` without
    its training state, provenance extended with ``eval`` (dataset provenance, COCO stats,
    per-class AP) and ``published_from`` (path, sha256). Returns the provenance."""
    payload = load_checkpoint(checkpoint)
    metrics = evaluate_checkpoint(checkpoint, annotations, images, batch_size=batch_size)
    provenance = dict(payload.get("provenance", {}))
    provenance["eval"] = {"dataset": dataset_provenance(annotations), "metrics": metrics["bbox"],
                          "per_class_AP": metrics["per_class_AP"],
                          "num_detections": metrics["num_detections"]}
    provenance["published_from"] = {"path": str(checkpoint), "sha256": file_sha256(checkpoint)}
    release = {k: v for k, v in payload.items() if k != "training"}
    release["provenance"] = provenance
    with atomic_path(out_path) as tmp:
        torch.save(release, tmp)
    return provenance
