"""A tiny ground truth: 3 images, 2 categories with non-contiguous ids, one box per image and
category, with small (area < 32²), medium and large boxes so that all 12 COCO numbers are
defined."""
import json

import pytest

CAT, DOG = 3, 7
GT_BOXES = {  # annotation id: (image id, category id, [x, y, w, h])
    1: (10, CAT, [10, 10, 20, 20]),    # small, area 400
    2: (10, DOG, [50, 50, 120, 120]),  # large, area 14400
    3: (20, CAT, [0, 0, 50, 40]),      # medium, area 2000
    4: (35, DOG, [5, 5, 40, 40]),      # medium, area 1600
}


def tiny_gt() -> dict:
    return {
        "images": [
            {"id": 35, "file_name": "c.jpg", "width": 64, "height": 64},
            {"id": 10, "file_name": "a.jpg", "width": 200, "height": 200},
            {"id": 20, "file_name": "b.jpg", "width": 100, "height": 80},
        ],
        "categories": [{"id": DOG, "name": "dog"}, {"id": CAT, "name": "cat"}],
        "annotations": [
            {"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": box,
             "area": box[2] * box[3], "iscrowd": 0}
            for ann_id, (image_id, cat, box) in GT_BOXES.items()
        ],
    }


def perfect_detections(score=0.9) -> list:
    return [{"image_id": image_id, "category_id": cat, "bbox": list(box), "score": score}
            for image_id, cat, box in GT_BOXES.values()]


# A cat false positive in image 20 (area 900: small), ranked above every true positive.
FALSE_POSITIVE = {"image_id": 20, "category_id": CAT, "bbox": [60, 40, 30, 30], "score": 0.95}


def write_json(path, obj):
    path.write_text(json.dumps(obj))
    return path


@pytest.fixture
def gt_path(tmp_path):
    return write_json(tmp_path / "gt.json", tiny_gt())
