"""COCO-format datasets: read and validate the json, one record per image, decode images.

Every problem with a file is reported as a one-line :class:`~sadpipe.errors.UserError` that
names the file and the field, e.g. ``train.json: annotations[12].category_id 99 is not in
categories``. Only the first problem found is reported.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from sadpipe.data.categories import as_dicts, class_order
from sadpipe.errors import UserError
from sadpipe.fileio import load_json_file
from sadpipe.validation import is_finite_number, is_int, show_value, type_name

# COCO has boxes that poke out of their image by a fraction of a pixel; accept up to this.
BOX_TOLERANCE_PX = 1.0
CROWD = 1
NOT_CROWD = 0


class ImageError(UserError):
    """An image file is missing or cannot be decoded. A subclass of ``UserError`` so that a
    caller can skip and count such images (training's default) or fail (``--strict``)."""


@dataclass(frozen=True)
class ImageRecord:
    """One image of a COCO-format file: its object boxes and its crowd regions.

    Attributes:
        image_id: the COCO image id.
        file_name: path of the image relative to the images folder.
        width, height: image size in pixels, as the json says.
        boxes: (K, 4) float32, xyxy in absolute pixels, clipped to the image; the
            annotations with ``iscrowd`` 0.
        category_ids: (K,) int64, COCO category ids (not contiguous class indices).
        scores: (K,) float32 when the file has a ``score`` per annotation (pseudo-labels),
            else None.
        crowd_boxes: (M, 4) float32, xyxy, clipped: the ``iscrowd`` 1 annotations, regions
            training ignores (:func:`sadpipe.modeling.targets.match_anchors`).
    """

    image_id: int
    file_name: str
    width: int
    height: int
    boxes: np.ndarray
    category_ids: np.ndarray
    scores: np.ndarray | None = None
    crowd_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))

    @property
    def trainable(self) -> bool:
        """Whether training uses this image: it has at least one (non-crowd) box. The release
        leaves images without boxes out of training; sadpipe does so on every path (plain,
        from the teacher cache, with the live teacher), and does not cache them."""
        return len(self.boxes) > 0


def read_coco_json(path, *, require_annotations=True) -> dict:
    """Load and validate a COCO dataset-format file.

    With ``require_annotations=False`` an image-info-only file (like COCO's
    ``image_info_unlabeled2017.json``) is accepted: ``annotations`` and ``categories`` may be
    absent (they are then empty lists). Annotations that are present are always validated.
    Optional annotation fields are filled in: ``area`` (box width × height) and ``iscrowd``
    (0). Raises ``UserError`` naming the file and the field for: a missing or non-JSON file,
    missing ``images``/``categories``/``annotations``, malformed entries, duplicate ids,
    annotations that reference an unknown image or category, boxes with non-positive width or
    height, and boxes outside their image (by more than ``BOX_TOLERANCE_PX``).
    """
    data = load_json_file(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object with 'images' and 'categories', "
                        f"found a {type_name(data)}")
    sizes = _check_images(_get_list(data, "images", path, required=True), path)
    categories = _get_list(data, "categories", path, required=require_annotations)
    category_ids = _check_categories(categories, path, require_annotations)
    annotations = _get_list(data, "annotations", path, required=require_annotations)
    _check_annotations(annotations, sizes, category_ids, path)
    data["categories"], data["annotations"] = categories, annotations
    return data


class CocoDataset:
    """The images and boxes of a COCO-format file, one :class:`ImageRecord` per image.

    Args:
        annotations: path of the COCO json (dataset format; pseudo-labels may carry a
            ``score`` per annotation).
        images_dir: folder that ``images[].file_name`` is relative to.
        require_annotations: False accepts image-info-only files (unlabeled images).

    Attributes:
        categories: ``[{"id": int, "name": str}]`` in class-index order (by id, whatever the
            file's order; :mod:`sadpipe.data.categories`).
        category_ids: the category ids in that order.
        records: one record per image sorted by image id, images without boxes included.
    """

    def __init__(self, annotations, images_dir, *, require_annotations=True):
        self.annotations_path = Path(annotations)
        self.images_dir = Path(images_dir)
        data = read_coco_json(self.annotations_path, require_annotations=require_annotations)
        if not self.images_dir.is_dir():
            raise UserError(f"{self.images_dir}: images folder not found")
        self.categories = as_dicts(class_order(data["categories"]))
        self.category_ids = [c["id"] for c in self.categories]
        self.records = _build_records(data["images"], data["annotations"])

    def __len__(self) -> int:
        return len(self.records)

    def image_path(self, record: ImageRecord) -> Path:
        """Where the image of ``record`` lives."""
        return self.images_dir / record.file_name

    def load_image(self, record: ImageRecord) -> Image.Image:
        """The RGB image of ``record``; ``ImageError`` if it cannot be read or its size is not
        the one the json gives (the boxes would not fit the pixels)."""
        path = self.image_path(record)
        image = open_image(path)
        if image.size != (record.width, record.height):
            raise ImageError(f"{path}: image is {image.width}x{image.height} but "
                             f"{self.annotations_path} says {record.width}x{record.height}")
        return image


def open_image(path) -> Image.Image:
    """Decode the image at ``path`` as 8-bit RGB: grayscale (``L``) is copied to the three
    channels, an alpha channel (``RGBA``, ``LA``) is dropped, palette and CMYK images are
    converted. ``ImageError`` if it is missing, undecodable, or has more than 8 bits per
    channel (16-bit or float pixels would be clipped to white, not scaled)."""
    path = Path(path)
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise ImageError(f"{path}: image file not found") from None
    except OSError as err:
        raise ImageError(f"{path}: cannot read image file ({err.strerror})") from None
    with handle:
        try:
            with Image.open(handle) as image:
                if _is_wide(image.mode):
                    raise ImageError(f"{path}: {image.mode} image (16-bit or float pixels); "
                                     "convert it to 8-bit RGB or grayscale")
                return image.convert("RGB")  # convert() decodes every pixel
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            raise ImageError(f"{path}: cannot decode image") from None


def _is_wide(mode: str) -> bool:
    """Pillow modes with more than 8 bits per channel: I, F, I;16, I;16B, ..."""
    return mode in ("I", "F") or mode.startswith("I;")


# ---------------------------------------------------------------------------- validation


def _get_list(data: dict, key: str, path, *, required: bool) -> list:
    if key not in data:
        if required:
            raise UserError(f"{path}: '{key}' is missing")
        return []
    if not isinstance(data[key], list):
        raise UserError(f"{path}: '{key}' must be a list, found a {type_name(data[key])}")
    return data[key]


def check_fields(entry, field: str, path, required: dict) -> None:
    """``entry`` is a JSON object holding every key of ``required`` = {key: (is_valid,
    "what is expected")}; otherwise ``UserError("<path>: <field>.<key> ...")``."""
    if not isinstance(entry, dict):
        raise UserError(f"{path}: {field} must be an object, found a {type_name(entry)}")
    for key, (is_valid, expected) in required.items():
        if key not in entry:
            raise UserError(f"{path}: {field}.{key} is missing")
        if not is_valid(entry[key]):
            raise UserError(f"{path}: {field}.{key} must be {expected}, "
                            f"found {show_value(entry[key])}")


def _check_unique(seen: set, value, field: str, path) -> None:
    if value in seen:
        raise UserError(f"{path}: {field} {show_value(value)} is used twice")
    seen.add(value)


def _is_relative_file_name(name) -> bool:
    if not isinstance(name, str) or not name:
        return False
    pure = PurePosixPath(name.replace("\\", "/"))
    return not pure.is_absolute() and ".." not in pure.parts


_IMAGE_FIELDS = {
    "id": (is_int, "an integer"),
    "file_name": (_is_relative_file_name, "a relative path inside the images folder"),
    "width": (lambda v: is_int(v) and v > 0, "a positive integer"),
    "height": (lambda v: is_int(v) and v > 0, "a positive integer"),
}
_CATEGORY_FIELDS = {
    "id": (is_int, "an integer"),
    "name": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
}
_ANNOTATION_FIELDS = {
    "id": (is_int, "an integer"),
    "image_id": (is_int, "an integer"),
    "category_id": (is_int, "an integer"),
    "bbox": (lambda v: isinstance(v, list) and len(v) == 4 and all(map(is_finite_number, v)),
             "[x, y, width, height] (4 finite numbers)"),
}


def _check_images(images: list, path) -> dict[int, tuple[int, int]]:
    """Returns {image id: (width, height)}."""
    sizes, names = {}, set()
    for i, image in enumerate(images):
        check_fields(image, f"images[{i}]", path, _IMAGE_FIELDS)
        if image["id"] in sizes:
            raise UserError(f"{path}: images[{i}].id {image['id']} is used twice")
        _check_unique(names, image["file_name"], f"images[{i}].file_name", path)
        sizes[image["id"]] = (image["width"], image["height"])
    return sizes


def _check_categories(categories: list, path, required: bool) -> set[int]:
    if required and not categories:
        raise UserError(f"{path}: 'categories' is empty")
    ids, names = set(), set()
    for i, category in enumerate(categories):
        check_fields(category, f"categories[{i}]", path, _CATEGORY_FIELDS)
        _check_unique(ids, category["id"], f"categories[{i}].id", path)
        _check_unique(names, category["name"], f"categories[{i}].name", path)
    return ids


def _check_annotations(annotations: list, sizes: dict, category_ids: set, path) -> None:
    ids = set()
    with_score = sum(1 for a in annotations if isinstance(a, dict) and "score" in a)
    for i, ann in enumerate(annotations):
        field = f"annotations[{i}]"
        check_fields(ann, field, path, _ANNOTATION_FIELDS)
        _check_unique(ids, ann["id"], f"{field}.id", path)
        if ann["image_id"] not in sizes:
            raise UserError(f"{path}: {field}.image_id {ann['image_id']} is not in images")
        if ann["category_id"] not in category_ids:
            raise UserError(f"{path}: {field}.category_id {ann['category_id']} "
                            f"is not in categories")
        _check_box(ann["bbox"], f"{field}.bbox", sizes[ann["image_id"]], path)
        _check_optional_fields(ann, field, path, scores_expected=with_score > 0)
        ann.setdefault("iscrowd", NOT_CROWD)
        ann.setdefault("area", ann["bbox"][2] * ann["bbox"][3])


def _check_box(bbox: list, field: str, size: tuple[int, int], path) -> None:
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        raise UserError(f"{path}: {field} {show_value(bbox)} has non-positive width or height")
    width, height = size
    tol = BOX_TOLERANCE_PX
    inside = x >= -tol and y >= -tol and x + w <= width + tol and y + h <= height + tol
    overlaps = min(x + w, width) > max(x, 0) and min(y + h, height) > max(y, 0)
    if not (inside and overlaps):
        raise UserError(f"{path}: {field} {show_value(bbox)} is outside the "
                        f"{width}x{height} image")


def _check_optional_fields(ann: dict, field: str, path, *, scores_expected: bool) -> None:
    crowd = ann.get("iscrowd", NOT_CROWD)
    if not (is_int(crowd) and crowd in (NOT_CROWD, CROWD)):
        raise UserError(f"{path}: {field}.iscrowd must be 0 or 1, found {show_value(crowd)}")
    if "area" in ann and not (is_finite_number(ann["area"]) and ann["area"] >= 0):
        raise UserError(f"{path}: {field}.area must be a non-negative number, "
                        f"found {show_value(ann['area'])}")
    if scores_expected and "score" not in ann:
        raise UserError(f"{path}: {field}.score is missing (other annotations have one)")
    if "score" in ann and not (is_finite_number(ann["score"]) and 0.0 <= ann["score"] <= 1.0):
        raise UserError(f"{path}: {field}.score must be a number in [0, 1], "
                        f"found {show_value(ann['score'])}")


# ------------------------------------------------------------------------------- records


def _build_records(images: list, annotations: list) -> list[ImageRecord]:
    has_scores = any("score" in a for a in annotations)
    by_image: dict[int, dict[int, list[dict]]] = {
        image["id"]: {NOT_CROWD: [], CROWD: []} for image in images}
    for ann in annotations:
        by_image[ann["image_id"]][ann["iscrowd"]].append(ann)
    return [_make_record(image, by_image[image["id"]], has_scores)
            for image in sorted(images, key=lambda image: image["id"])]


def _make_record(image: dict, anns: dict[int, list[dict]], has_scores: bool) -> ImageRecord:
    objects = anns[NOT_CROWD]
    scores = np.array([a["score"] for a in objects], dtype=np.float32) if has_scores else None
    return ImageRecord(
        image_id=image["id"], file_name=image["file_name"],
        width=image["width"], height=image["height"],
        boxes=_clipped_xyxy(objects, image),
        category_ids=np.array([a["category_id"] for a in objects], dtype=np.int64),
        scores=scores,
        crowd_boxes=_clipped_xyxy(anns[CROWD], image),
    )


def _clipped_xyxy(anns: list[dict], image: dict) -> np.ndarray:
    """(K, 4) float32 xyxy boxes of ``anns`` (COCO xywh), clipped to the image."""
    xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, image["width"])
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, image["height"])
    return boxes.astype(np.float32)
