"""Evaluation while training (``train.eval_period``): the COCO box AP of the model being
trained, on the val set (``data.val_annotations`` / ``data.val_images``), every N iterations
and after the last, as a ``metrics.jsonl`` line; the best so far by val AP is kept as
``model_best.pt`` next to ``model_final.pt`` (detectron2's ``TEST.EVAL_PERIOD``,
mmdetection's ``save_best``).

The model is run as ``sadpipe eval`` runs a checkpoint (:class:`Predictor`: its test scale,
no flip) and scored with the same pycocotools code, so the AP of a ``model_best.pt`` equals
what ``sadpipe eval`` measures for it.
"""
from __future__ import annotations

import numpy as np
import torch

from sadpipe.data.categories import same_ids
from sadpipe.data.coco import CocoDataset, read_coco_json
from sadpipe.engine.inference import Predictor, to_coco_results
from sadpipe.errors import UserError
from sadpipe.evaluation.coco_eval import run_cocoeval, summarize
from sadpipe.modeling.spec import ModelSpec

VAL_PREFIX = "val_"                       # metrics.jsonl keys of an evaluation: val_AP, ...
VAL_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
BEST_KEY = VAL_PREFIX + "AP"              # what model_best.pt is the best by


class PeriodicEval:
    """The val set, read and checked once (before training starts), and its evaluation.

    Args:
        annotations, images: ``data.val_annotations`` and ``data.val_images``.
        spec: the trained model's spec; the val set must hold its categories.
        device: where the model runs.
        batch_size: images per forward pass.
    """

    def __init__(self, annotations, images, spec: ModelSpec, *, device, batch_size: int):
        if not annotations or not images:
            raise UserError("config: train.eval_period needs data.val_annotations and "
                            "data.val_images (the val set to evaluate on)")
        self.annotations = annotations
        self.gt = read_coco_json(annotations)
        if not any(ann["iscrowd"] == 0 for ann in self.gt["annotations"]):
            raise UserError(f"{annotations}: data.val_annotations has no (non-crowd) boxes to "
                            "evaluate against")
        self.dataset = CocoDataset(annotations, images)
        if not same_ids(spec.category_ids, self.dataset.category_ids):
            raise UserError(f"{annotations}: data.val_annotations has category ids "
                            f"{self.dataset.category_ids}, the model trains {spec.category_ids}")
        self.spec, self.device, self.batch_size = spec, device, batch_size

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module) -> dict:
        """``{"val_AP", "val_AP50", ..., "val_APl"}`` (fractions, None where COCO leaves them
        undefined) of ``model`` (a plain module, not DDP-wrapped). The model is put in eval
        mode for it and back in train mode after."""
        predictor = Predictor(model, self.spec, device=self.device)
        detections = []
        records = self.dataset.records
        try:
            for start in range(0, len(records), self.batch_size):
                chunk = records[start:start + self.batch_size]
                images = [np.asarray(self.dataset.load_image(r)) for r in chunk]
                for record, det in zip(chunk, predictor(images)):
                    detections += to_coco_results(record.image_id, det, self.spec.category_ids,
                                                  convention=self.spec.boxes)
        finally:
            model.train()
        stats = summarize(run_cocoeval(self.gt, detections, annotations=self.annotations),
                          self.gt, detections)["bbox"]
        return {VAL_PREFIX + name: stats[name] for name in VAL_STATS}


def best_so_far(records: list[dict]) -> float | None:
    """The highest val AP among ``metrics.jsonl`` records (None without a defined one)."""
    values = [r[BEST_KEY] for r in records if r.get(BEST_KEY) is not None]
    return max(values) if values else None


def is_better(value: float | None, best: float | None) -> bool:
    """A defined AP above the best so far (the first defined AP is better than none)."""
    return value is not None and (best is None or value > best)
