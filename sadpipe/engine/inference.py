"""Batched inference: images in original pixels → detections in original pixels."""
from __future__ import annotations

import time

import numpy as np
import torch
from tqdm import tqdm

from cuda_ops.constants import FP32
from sadpipe.checkpoint import load_model
from sadpipe.data.categories import same_ids
from sadpipe.data.coco import CocoDataset
from sadpipe.data.transforms import make_recipe, make_view, pad_batch, untransform_boxes
from sadpipe.engine.precision import autocast
from sadpipe.errors import UserError
from sadpipe.modeling.boxes import BoxConvention
from sadpipe.modeling.fold import fold_batch_norms
from sadpipe.modeling.postprocess import postprocess_batch
from sadpipe.modeling.spec import ModelSpec


class Predictor:
    """Runs a detector at its test scale (``preprocessing.min_size``), no flip, reading its
    outputs as its checkpoint says (anchors, box convention, thresholds).

    A call is three steps, which ``python -m sadpipe.bench.inference`` times apart:
    :meth:`prepare` (resize, normalise, pad), :meth:`forward` (the network) and
    :meth:`detections` (decode, clip, NMS). ``precision`` (fp32 | bf16 | fp16) is the network's
    (:mod:`sadpipe.engine.precision`); decoding and NMS run on its outputs in float32.

    The network run is a copy of ``model`` with the body's batch norms folded into its
    convolutions (:func:`~sadpipe.modeling.fold.fold_batch_norms`: the same outputs up to float
    rounding, one op fewer per convolution; ``fold_norms=False`` runs ``model`` as it is);
    ``model`` itself is not changed."""

    def __init__(self, model: torch.nn.Module, spec: ModelSpec, *, device: str = "cpu",
                 precision: str = FP32, fold_norms: bool = True):
        self.model = fold_batch_norms(model) if fold_norms else model.eval()
        self.spec, self.device, self.precision = spec, device, precision
        self._anchors: dict[tuple[int, int], torch.Tensor] = {}   # padded (H, W) -> (HWA, 4)

    @torch.no_grad()
    def __call__(self, images: list[np.ndarray]) -> list[dict]:
        """images: RGB uint8 arrays (H, W, 3). Returns per image "boxes" (D, 4) xyxy original
        pixels, "scores" (D,), "labels" (D,) class indices."""
        batch, recipes = self.prepare(images)
        return self.detections(self.forward(batch), recipes, tuple(batch.shape[-2:]))

    def prepare(self, images: list[np.ndarray]) -> tuple[torch.Tensor, list[dict]]:
        """The padded batch (N, 3, H, W) on the device, and each image's resize recipe."""
        prep = self.spec.preprocessing
        recipes = [make_recipe(prep, im.shape[0], im.shape[1]) for im in images]
        batch = pad_batch([make_view(im, r, prep) for im, r in zip(images, recipes)],
                          prep.size_divisibility)
        return batch.to(self.device), recipes

    @torch.no_grad()
    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cls_logits (N, HWA, C) and box_deltas (N, HWA, 4), float32, of a padded batch."""
        with autocast(self.device, self.precision):
            cls_logits, box_deltas = self.model(batch)
        return cls_logits.float(), box_deltas.float()

    @torch.no_grad()
    def detections(self, outputs: tuple[torch.Tensor, torch.Tensor], recipes: list[dict],
                   padded: tuple[int, int]) -> list[dict]:
        """Each image's detections (on the CPU) from the network's outputs on its batch."""
        cls_logits, box_deltas = outputs
        layout = self.spec.anchor_layout
        if padded not in self._anchors:
            self._anchors[padded] = layout.anchors(padded).to(self.device)
        frames = [self._frame(recipe) for recipe in recipes]
        batch = postprocess_batch(cls_logits, box_deltas, self._anchors[padded], layout.level_sizes(padded),
                                  [size for size, _ in frames], box_scales=[scale for _, scale in frames],
                                  last_level_score_thresh=self.spec.last_level_score_thresh,
                                  convention=self.spec.boxes)
        out = []
        for det, recipe in zip(batch, recipes):
            det = {k: v.cpu() for k, v in det.items()}
            if not self.spec.boxes.nms_in_image:
                det["boxes"] = untransform_boxes(det["boxes"], recipe)
            out.append(det)
        return out

    def _frame(self, recipe: dict) -> tuple[tuple[int, int], float]:
        """Where boxes are clipped and NMSed, (h, w), and the factor they are divided by first:
        the resized view (1), or (Detectron) the original image (the resize factor)."""
        if not self.spec.boxes.nms_in_image:
            return tuple(recipe["resized_size"]), 1.0
        h, w = recipe["image_size"]
        return (h, w), self.spec.preprocessing.scale(h, w)


def to_coco_results(image_id: int, det: dict, category_ids: list[int], *,
                    score_thresh: float = 0.0, convention: BoxConvention = BoxConvention()) -> list[dict]:
    """COCO result dicts (bbox xywh in the model's box convention) for one image's detections."""
    results = []
    xywh = convention.to_xywh(det["boxes"].double()).tolist()   # widths in float64
    for box, score, label in zip(xywh, det["scores"].tolist(), det["labels"].tolist()):
        if score < score_thresh:
            continue
        results.append({"image_id": image_id, "category_id": category_ids[label],
                        "bbox": box, "score": score})
    return results


def check_categories(spec: ModelSpec, dataset: CocoDataset, checkpoint_path) -> None:
    """The checkpoint must predict exactly the dataset's categories."""
    if not same_ids(spec.category_ids, dataset.category_ids):
        raise UserError(f"{checkpoint_path}: checkpoint has {spec.num_classes} classes "
                        f"(ids {spec.category_ids[:8]}{'...' if spec.num_classes > 8 else ''}) but "
                        f"{dataset.annotations_path} has {len(dataset.category_ids)} "
                        f"(ids {dataset.category_ids[:8]}{'...' if len(dataset.category_ids) > 8 else ''})")


def detect_dataset(checkpoint_path, dataset: CocoDataset, *, batch_size: int = 4,
                   device: str = "cpu", precision: str = FP32, progress: bool = True,
                   timing: dict | None = None) -> list[dict]:
    """Detections (COCO results) of a checkpoint, its network at ``precision``, on every image
    of a dataset.

    ``timing``: a dict that receives ``{"images", "seconds", "images_per_s"}`` of the
    predictor alone (network and post-processing: no model loading, image reading or
    COCOeval), what ``sadpipe eval`` reports as the model's inference speed."""
    model, spec = load_model(checkpoint_path, device=device)
    check_categories(spec, dataset, checkpoint_path)
    predictor = Predictor(model, spec, device=device, precision=precision)
    results = []
    records = dataset.records
    starts = range(0, len(records), batch_size)
    seconds = 0.0
    for start in tqdm(starts, desc="detect", disable=not progress, unit="batch"):
        chunk = records[start:start + batch_size]
        images = [np.asarray(dataset.load_image(r)) for r in chunk]
        t0 = time.perf_counter()
        detections = predictor(images)
        seconds += time.perf_counter() - t0
        for record, det in zip(chunk, detections):
            results += to_coco_results(record.image_id, det, spec.category_ids,
                                       convention=spec.boxes)
    if timing is not None:
        timing.update(images=len(records), seconds=round(seconds, 6),
                      images_per_s=round(len(records) / max(seconds, 1e-9), 1), precision=precision)
    return results
