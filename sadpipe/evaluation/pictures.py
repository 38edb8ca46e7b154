"""The pictures ``sadpipe eval --draw N`` and ``sadpipe pseudo-label --draw N`` write: N images
of a set, chosen by :func:`sadpipe.evaluation.draw.choose_images`, drawn with boxes.

Both write ``drawings/`` (one ``<image id, 12 digits>.png`` per image) with
:func:`sadpipe.evaluation.draw.write_pictures`: the folder appears complete or not at all.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from cuda_ops.constants import FAINT_FLOOR, FP32
from sadpipe.data.categories import class_index_of
from sadpipe.data.coco import CocoDataset, ImageError
from sadpipe.evaluation.draw import choose_images, draw_boxes, picture_name, write_pictures, xywh_to_xyxy

DRAWINGS_DIR = "drawings"


def write_eval_pictures(dataset: CocoDataset, detections: list[dict], out_dir, *, count: int,
                        min_score: float, seed: int) -> list[Path]:
    """``count`` images of ``dataset`` with the detections scoring ≥ ``min_score`` (solid,
    labelled) and their ground truth (dashed), written to ``out_dir/drawings``.

    detections: COCO results ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``
    with image and category ids of ``dataset``. Returns the PNG paths.
    """
    chosen = set(choose_images((r.image_id for r in dataset.records), count, seed))
    by_image = defaultdict(list)
    for det in detections:
        if det["image_id"] in chosen and det["score"] >= min_score:
            by_image[det["image_id"]].append(det)
    classes = class_index_of(dataset.category_ids)
    names = [c["name"] for c in dataset.categories]

    def pictures() -> Iterator[tuple[str, Image.Image]]:
        for record in dataset.records:
            if record.image_id in chosen:
                boxes, labels, scores = coco_boxes(by_image[record.image_id], classes)
                yield picture_name(record.image_id), draw_boxes(
                    dataset.load_image(record), boxes, labels, scores, names,
                    ground_truth=record.boxes)

    return write_pictures(Path(out_dir) / DRAWINGS_DIR, pictures())


def coco_boxes(entries: list[dict], classes: dict[int, int]) -> tuple[np.ndarray, ...]:
    """COCO results or annotations (``bbox``, ``category_id``, ``score``) as ``(boxes (N, 4)
    xyxy, labels (N,) class indices, scores (N,))``; ``classes``: {category id: index}."""
    boxes = np.array([xywh_to_xyxy(e["bbox"]) for e in entries], dtype=float).reshape(-1, 4)
    labels = np.array([classes[e["category_id"]] for e in entries], dtype=int)
    scores = np.array([e["score"] for e in entries], dtype=float)
    return boxes, labels, scores


def write_pseudo_label_pictures(teacher, images_dir, image_info, dataset: dict, out_dir, *,
                                id_offset: int, score_thresh: float, count: int, seed: int,
                                device: str = "cpu", precision: str = FP32) -> list[Path]:
    """``count`` unlabeled images with the teacher's boxes, written to
    ``out_dir/drawings``: the pseudo-labels of ``dataset`` (what the student is taught) solid
    and labelled, and the teacher's boxes scoring in [``FAINT_FLOOR``, ``score_thresh``)
    faint. Unreadable images are left out.

    Args:
        teacher: the teacher checkpoint (run again on the chosen images for the faint boxes).
        images_dir, image_info: the unlabeled images, as ``sadpipe pseudo-label`` takes
            them (``image_info`` None: every image file under ``images_dir``).
        dataset: the pseudo-label output (COCO dict); unlabeled image i is its image
            ``i + id_offset``.
        device, precision: where and at which precision the teacher runs (as for ``dataset``).
    Returns the PNG paths.
    """
    from sadpipe.checkpoint import load_model  # torch: only when needed
    from sadpipe.engine.inference import Predictor
    from sadpipe.engine.pseudo_label import list_image_files, load_item, read_image_info

    model, spec = load_model(teacher, device=device)
    predictor = Predictor(model, spec, device=device, precision=precision)
    items = read_image_info(image_info, spec) if image_info else list_image_files(images_dir)
    chosen = set(choose_images((item.image_id for item in items), count, seed))
    kept = _by_image(dataset["annotations"])
    classes = class_index_of(spec.category_ids)
    names = [name for _, name in spec.categories]

    def pictures() -> Iterator[tuple[str, Image.Image]]:
        for item in (item for item in items if item.image_id in chosen):
            try:
                pixels = load_item(images_dir, item)
            except ImageError:
                continue
            weak = weak_boxes(predictor, pixels, score_thresh)
            boxes, labels, scores = coco_boxes(kept[item.image_id + id_offset] + weak, classes)
            yield picture_name(item.image_id), draw_boxes(pixels, boxes, labels, scores, names,
                                                          faint_below=score_thresh)

    return write_pictures(Path(out_dir) / DRAWINGS_DIR, pictures())


def weak_boxes(predictor, pixels: np.ndarray, score_thresh: float) -> list[dict]:
    """The teacher's detections on one image (RGB uint8 (H, W, 3)) scoring in
    [``FAINT_FLOOR``, ``score_thresh``), as COCO results (``image_id`` 0)."""
    from sadpipe.engine.inference import to_coco_results  # torch: only when needed

    spec = predictor.spec
    results = to_coco_results(0, predictor([pixels])[0], spec.category_ids,
                              score_thresh=FAINT_FLOOR, convention=spec.boxes)
    return [r for r in results if r["score"] < score_thresh]


def _by_image(annotations: list[dict]) -> dict[int, list[dict]]:
    """{image id: its annotations}; an image without any maps to []."""
    out = defaultdict(list)
    for ann in annotations:
        out[ann["image_id"]].append(ann)
    return out
