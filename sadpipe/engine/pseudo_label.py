"""Teacher pseudo-labels: run a checkpoint on unlabeled images, keep its boxes with a score
at or above a threshold, and write them as a COCO dataset-format file (optionally merged with
a labeled set: the paper's "pseudo-labeled set", train ∪ unlabeled).

The output is what later stages read with ``CocoDataset(PSEUDO.json, IMAGES_ROOT)``:

- ``images``: the unlabeled images with at least one kept box (the others are left out and
  counted), after the labeled set's images when merging.
- ``annotations``: ``id``, ``image_id``, ``category_id``, ``bbox`` (x, y, w, h in original
  pixels), ``area``, ``iscrowd: 0`` and the teacher's ``score``. Merged ground truth keeps its
  fields and ids and gets ``score: 1.0`` (a file has a score on every annotation or on none).
- ``categories``: the teacher checkpoint's.
- ``info``: the images root every ``file_name`` is relative to, the threshold, the teacher's
  sha256 and the precision it ran at, the id offset of the unlabeled images, and the images
  left out or skipped.

Ids: labeled images and annotations keep theirs. Unlabeled image ids (1..N in file order when
listed from a folder, the image-info file's otherwise) are shifted by one constant,
``info.unlabeled_id_offset``, so the smallest lands one above the largest labeled id (the
offset is 0 without a labeled set). Teacher boxes are numbered after the largest labeled
annotation id, in output order.

Under torchrun the list of batches is split across ranks in contiguous blocks; each rank
writes its part and rank 0 merges them, so the output does not depend on the number of
processes. Images go through the teacher in batches of ``batch_size`` consecutive images in
id order whatever the number of processes, so every image is padded the same way.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from cuda_ops.constants import FP32, PSEUDO_LABEL_BATCH_SIZE, PSEUDO_LABEL_SCORE_THRESH
from sadpipe.checkpoint import load_model
from sadpipe.data.categories import as_dicts
from sadpipe.data.coco import ImageError, open_image, read_coco_json
from sadpipe.engine.distributed import init_distributed, resolve_device
from sadpipe.engine.inference import Predictor, to_coco_results
from sadpipe.engine.progress import Progress
from sadpipe.engine.sharding import gather_json_parts, remove_parts, split_for_rank
from sadpipe.errors import UserError
from sadpipe.fileio import file_sha256, write_json
from sadpipe.modeling.boxes import BoxConvention
from sadpipe.modeling.spec import ModelSpec

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
LABELED_SCORE = 1.0      # the score merged ground-truth boxes carry
PROGRESS_LINES = 20      # plain progress lines per run when stderr is not a terminal
NOT_CROWD = 0


@dataclass(frozen=True)
class ImageItem:
    """One image to label.

    Attributes:
        image_id: its id before any merge offset.
        file_name: its path relative to the ``--images`` folder.
        size: (width, height) the image-info file gives; None when listed from the folder
            (then the decoded image gives it).
    """

    image_id: int
    file_name: str
    size: tuple[int, int] | None = None


@dataclass(frozen=True)
class LabeledSet:
    """A labeled COCO dataset to merge in; ``data`` as ``read_coco_json`` returns it."""

    path: Path
    images_dir: Path
    data: dict


@dataclass(frozen=True)
class OutputNames:
    """How input file names and ids become output ones.

    Attributes:
        root: the folder every output ``file_name`` is relative to.
        unlabeled_prefix / labeled_prefix: the ``--images`` / labeled folders relative to
            ``root`` (posix, "" when the folder is the root).
        id_offset: added to every unlabeled image id.
        first_annotation_id: the id of the first teacher box.
    """

    root: Path
    unlabeled_prefix: str
    labeled_prefix: str
    id_offset: int
    first_annotation_id: int

    def unlabeled_name(self, file_name: str) -> str:
        return _join(self.unlabeled_prefix, file_name)

    def labeled_name(self, file_name: str) -> str:
        return _join(self.labeled_prefix, file_name)


# ------------------------------------------------------------------------------ inputs


def list_image_files(images_dir) -> list[ImageItem]:
    """Every file under ``images_dir`` (recursively) ending in one of ``IMAGE_SUFFIXES``
    (any case), sorted by relative path, with ids 1..N in that order."""
    root = Path(images_dir)
    names = sorted(path.relative_to(root).as_posix() for path in root.rglob("*")
                   if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
    return [ImageItem(image_id, name) for image_id, name in enumerate(names, start=1)]


def read_image_info(path, spec: ModelSpec) -> list[ImageItem]:
    """The images of a COCO image-info file (annotations, if any, are ignored), sorted by
    id. Categories, when the file has some, must be the teacher's."""
    data = read_coco_json(path, require_annotations=False)
    if data["categories"]:
        check_same_categories(spec, data["categories"], path)
    return [ImageItem(im["id"], im["file_name"], (im["width"], im["height"]))
            for im in sorted(data["images"], key=lambda im: im["id"])]


def read_labeled_set(path, images_dir, spec: ModelSpec) -> LabeledSet:
    """A labeled COCO dataset whose categories are the teacher's."""
    images_dir = Path(images_dir)
    data = read_coco_json(path)
    check_same_categories(spec, data["categories"], path)
    if not images_dir.is_dir():
        raise UserError(f"{images_dir}: labeled images folder not found (--merge-images)")
    return LabeledSet(Path(path), images_dir, data)


def check_same_categories(spec: ModelSpec, categories: list[dict], path) -> None:
    """``categories`` (``[{"id", "name"}]``) must be exactly the checkpoint's."""
    theirs = {(c["id"], c["name"]) for c in categories}
    ours = set(spec.categories)
    if theirs != ours:
        raise UserError(f"{path}: categories differ from the teacher checkpoint's "
                        f"(only in this file: {_show_categories(theirs - ours)}; "
                        f"only in the checkpoint: {_show_categories(ours - theirs)})")


def plan_output_names(images_dir, items: list[ImageItem],
                      labeled: LabeledSet | None) -> OutputNames:
    """The images root (``images_dir``, or the deepest folder holding both it and the
    labeled images), the file-name prefixes and the id offsets; refuses a file that would
    appear twice in the output."""
    unlabeled_dir = Path(images_dir).resolve()
    if labeled is None:
        return OutputNames(unlabeled_dir, "", "", 0, 1)
    labeled_dir = labeled.images_dir.resolve()
    root = Path(os.path.commonpath([unlabeled_dir, labeled_dir]))
    names = OutputNames(
        root=root,
        unlabeled_prefix=unlabeled_dir.relative_to(root).as_posix(),
        labeled_prefix=labeled_dir.relative_to(root).as_posix(),
        id_offset=_id_offset(labeled.data["images"], items),
        first_annotation_id=max((a["id"] for a in labeled.data["annotations"]), default=0) + 1)
    labeled_names = {names.labeled_name(im["file_name"]) for im in labeled.data["images"]}
    for item in items:
        if names.unlabeled_name(item.file_name) in labeled_names:
            raise UserError(f"{labeled.path}: image {item.file_name} is both in the labeled "
                            f"set and in {images_dir}; pass disjoint image sets")
    return names


def _id_offset(labeled_images: list[dict], items: list[ImageItem]) -> int:
    if not labeled_images or not items:
        return 0
    return max(im["id"] for im in labeled_images) + 1 - min(item.image_id for item in items)


def _join(prefix: str, file_name: str) -> str:
    if prefix in ("", "."):
        return file_name
    return (PurePosixPath(prefix) / file_name.replace("\\", "/")).as_posix()


def _show_categories(pairs: set) -> str:
    return ", ".join(f"{cid} '{name}'" for cid, name in sorted(pairs)) or "none"


# ---------------------------------------------------------------------------- labeling


def load_item(images_dir, item: ImageItem) -> np.ndarray:
    """The RGB uint8 pixels (H, W, 3) of ``item``; ``ImageError`` if the file is missing,
    undecodable, or not the size the image-info file gives."""
    path = Path(images_dir) / item.file_name
    image = open_image(path)
    if item.size is not None and image.size != item.size:
        raise ImageError(f"{path}: image is {image.width}x{image.height} but the image info "
                         f"says {item.size[0]}x{item.size[1]}")
    return np.asarray(image)


def teacher_annotations(det: dict, category_ids: list[int], score_thresh: float, *,
                        convention: BoxConvention = BoxConvention()) -> list[dict]:
    """Annotation dicts (no ``id``/``image_id`` yet) for one image's detections with
    score ≥ ``score_thresh``. Boxes clipped to nothing (width or height 0) are dropped: they
    cannot be ground truth.

    det: "boxes" (D, 4) xyxy original pixels, "scores" (D,), "labels" (D,) class indices.
    """
    out = []
    for result in to_coco_results(0, det, category_ids, score_thresh=score_thresh,
                                  convention=convention):
        _, _, w, h = result["bbox"]
        if w > 0 and h > 0:
            out.append({"category_id": result["category_id"], "bbox": result["bbox"],
                        "area": w * h, "iscrowd": NOT_CROWD, "score": result["score"]})
    return out


def label_batches(predictor: Predictor, images_dir, batches: list[list[ImageItem]], *,
                  score_thresh: float, progress: bool = False) -> dict:
    """Run the teacher on ``batches`` (each one forward pass).

    Returns {"images": one entry per readable image, in order: {"id", "file_name", "width",
    "height", "annotations": [...]}, "skipped": [{"file_name", "error"}] for unreadable ones}.
    """
    category_ids = predictor.spec.category_ids
    images, skipped = [], []
    bar = Progress("pseudo-label", total=sum(len(b) for b in batches), unit="img", noun="images",
                   lines=PROGRESS_LINES, enabled=progress)
    for loaded in _prefetched(images_dir, batches):
        readable = [(item, pixels) for item, pixels in loaded if isinstance(pixels, np.ndarray)]
        skipped += [{"file_name": item.file_name, "error": err.message}
                    for item, err in loaded if isinstance(err, ImageError)]
        detections = predictor([pixels for _, pixels in readable]) if readable else []
        for (item, pixels), det in zip(readable, detections):
            images.append({"id": item.image_id, "file_name": item.file_name,
                           "width": pixels.shape[1], "height": pixels.shape[0],
                           "annotations": teacher_annotations(det, category_ids, score_thresh,
                                                              convention=predictor.spec.boxes)})
        bar.advance(len(loaded))
    bar.close()
    return {"images": images, "skipped": skipped}


def _load_batch(images_dir, batch: list[ImageItem]) -> list[tuple]:
    out = []
    for item in batch:
        try:
            out.append((item, load_item(images_dir, item)))
        except ImageError as err:
            out.append((item, err))
    return out


def _prefetched(images_dir, batches):
    """Yield each batch's [(item, pixels or ImageError)], decoding the next batch in a
    background thread while the current one is in the model."""
    if not batches:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_load_batch, images_dir, batches[0])
        for following in batches[1:]:
            current, pending = pending.result(), pool.submit(_load_batch, images_dir, following)
            yield current
        yield pending.result()


# ------------------------------------------------------------------------------ output


def assemble_dataset(parts: list[dict], spec: ModelSpec, names: OutputNames,
                     labeled: LabeledSet | None, *, info: dict) -> tuple[dict, dict]:
    """Merge the ranks' parts (in rank order) into the output dataset; returns (dataset,
    counts)."""
    images, annotations = _labeled_entries(labeled, names)
    next_id = names.first_annotation_id
    kept = empty = 0
    for entry in (image for part in parts for image in part["images"]):
        if not entry["annotations"]:
            empty += 1
            continue
        image_id = entry["id"] + names.id_offset
        images.append({"id": image_id, "file_name": names.unlabeled_name(entry["file_name"]),
                       "width": entry["width"], "height": entry["height"]})
        for ann in entry["annotations"]:
            annotations.append({"id": next_id, "image_id": image_id, **ann})
            next_id += 1
        kept += 1
    skipped = [s for part in parts for s in part["skipped"]]
    counts = {"kept": kept, "empty": empty, "boxes": next_id - names.first_annotation_id,
              "skipped": skipped}
    info = {**info, "images_root": str(names.root), "unlabeled_id_offset": names.id_offset,
            "images_without_boxes": empty, "skipped_images": skipped}
    return {"info": info, "images": images, "annotations": annotations,
            "categories": as_dicts(spec.categories)}, counts


def _labeled_entries(labeled: LabeledSet | None, names: OutputNames) -> tuple[list, list]:
    if labeled is None:
        return [], []
    images = [{**im, "file_name": names.labeled_name(im["file_name"])}
              for im in sorted(labeled.data["images"], key=lambda im: im["id"])]
    annotations = [{**ann, "score": ann.get("score", LABELED_SCORE)}
                    for ann in labeled.data["annotations"]]
    return images, annotations


# ---------------------------------------------------------------------------- the stage


def pseudo_label(teacher, images_dir, out, *, image_info=None, merge_with=None,
                 merge_images=None, score_thresh: float = PSEUDO_LABEL_SCORE_THRESH,
                 batch_size: int = PSEUDO_LABEL_BATCH_SIZE, device: str = "auto",
                 precision: str = FP32, progress: bool = True) -> dict | None:
    """Label the images of ``images_dir`` with ``teacher`` and write ``out`` atomically.

    Args:
        teacher: sadpipe checkpoint of the teacher.
        images_dir: folder of the unlabeled images.
        out: output COCO json; written only when complete.
        image_info: COCO image-info json naming the images (default: every image file
            under ``images_dir``).
        merge_with, merge_images: a labeled COCO json and its images folder to merge in.
        score_thresh: teacher boxes with a lower score are dropped.
        batch_size: images per forward pass.
        device: "auto", "cpu" or "cuda".
        precision: the teacher network's, fp32, bf16 or fp16 (:mod:`sadpipe.engine.precision`).
        progress: show progress (rank 0 only).

    Returns the summary on rank 0 ({"out", "images", "kept", "empty", "boxes", "skipped",
    "images_root", "labeled_images", "labeled_annotations"}), None on other ranks.
    """
    images_dir, out = Path(images_dir), Path(out)
    _check_paths(images_dir, out)
    device = resolve_device(device)
    dist = init_distributed(device)
    model, spec = load_model(teacher, device=device)
    items = read_image_info(image_info, spec) if image_info else list_image_files(images_dir)
    if not items:
        raise UserError(f"{image_info}: 'images' is empty, nothing to label" if image_info else
                        f"{images_dir}: no image files ({', '.join(IMAGE_SUFFIXES)}) to label")
    labeled = read_labeled_set(merge_with, merge_images, spec) if merge_with else None
    names = plan_output_names(images_dir, items, labeled)

    batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    part = label_batches(Predictor(model, spec, device=device, precision=precision), images_dir,
                         split_for_rank(batches, dist.rank, dist.world_size),
                         score_thresh=score_thresh, progress=progress and dist.is_main)
    parts = gather_json_parts(out, dist, part)
    if parts is None:
        return None
    info = {"description": "sadpipe pseudo-labels", "teacher_sha256": file_sha256(teacher),
            "teacher_precision": precision, "score_thresh": score_thresh,
            "unlabeled_images": len(items)}
    if labeled is not None:
        info["merged_with"] = str(labeled.path)
    dataset, counts = assemble_dataset(parts, spec, names, labeled, info=info)
    write_json(out, dataset, indent=None)
    remove_parts(out)
    return {"out": str(out), "images": len(items), **counts, "images_root": str(names.root),
            "labeled_images": len(labeled.data["images"]) if labeled else 0,
            "labeled_annotations": len(labeled.data["annotations"]) if labeled else 0,
            "id_offset": names.id_offset}


def _check_paths(images_dir: Path, out: Path) -> None:
    if not images_dir.is_dir():
        raise UserError(f"{images_dir}: images folder not found")
    if out.is_dir():
        raise UserError(f"{out}: is a folder; --out must be a json file path")
