"""Training views of a COCO set: class indices by the one rule, crowd regions carried to the
matcher in view pixels, images without object boxes left out."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from sadpipe.data.coco import CocoDataset
from sadpipe.data.loader import TrainDataset, collate
from sadpipe.data.transforms import Preprocessing

SIZE = (40, 30)      # width, height of every image
SCALE = 2            # train_min_sizes = [60]: short side 30 -> 60


def write_dataset(root):
    """Image 1: two objects and a crowd region; 2: a crowd region only; 3: nothing.
    Categories listed 9, 4 (class 0 is id 4, class 1 is id 9)."""
    for image_id in (1, 2, 3):
        Image.new("RGB", SIZE, (90, 90, 90)).save(root / f"{image_id}.png")
    data = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": SIZE[0], "height": SIZE[1]}
                   for i in (1, 2, 3)],
        "categories": [{"id": 9, "name": "kite"}, {"id": 4, "name": "bird"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 9, "bbox": [1, 2, 10, 5]},
            {"id": 2, "image_id": 1, "category_id": 4, "bbox": [20, 10, 8, 8]},
            {"id": 3, "image_id": 1, "category_id": 4, "bbox": [25, 0, 15, 30], "iscrowd": 1},
            {"id": 4, "image_id": 2, "category_id": 9, "bbox": [0, 0, 40, 30], "iscrowd": 1},
        ],
    }
    path = root / "train.json"
    path.write_text(json.dumps(data))
    return path


def dataset(root, *, flip):
    coco = CocoDataset(write_dataset(root), root)
    prep = Preprocessing(min_size=SIZE[1] * SCALE, max_size=1000)
    return TrainDataset(coco, coco.category_ids, prep, train_min_sizes=[SIZE[1] * SCALE],
                        flip=flip)


def test_views_carry_labels_and_crowd_regions(tmp_path):
    data = dataset(tmp_path, flip=False)
    assert len(data) == 1                     # images 2 (crowd only) and 3 (empty) left out
    sample = data[(0, 0)]
    assert sample["image_id"] == 1 and tuple(sample["image"].shape) == (3, 60, 80)
    assert sample["labels"].tolist() == [1, 0]          # ids 9, 4 -> classes 1, 0
    np.testing.assert_allclose(sample["boxes"], [[2, 4, 22, 14], [40, 20, 56, 36]])
    np.testing.assert_allclose(sample["crowd_boxes"], [[50, 0, 80, 60]])

    batch = collate([sample], size_divisibility=32)
    assert set(batch["targets"][0]) == {"boxes", "labels", "crowd_boxes"}
    assert torch.equal(batch["targets"][0]["crowd_boxes"], sample["crowd_boxes"])


def test_flipped_views_flip_crowd_regions_too(tmp_path):
    data = dataset(tmp_path, flip=True)
    views = [data[(0, seed)] for seed in range(8)]
    flipped = [v for v in views if v["recipe"]["flip"]]
    assert flipped and len(flipped) < len(views)
    width = SIZE[0] * SCALE
    for view in flipped:
        np.testing.assert_allclose(view["crowd_boxes"], [[width - 80, 0, width - 50, 60]])
        np.testing.assert_allclose(view["boxes"][0], [width - 22, 4, width - 2, 14])


@pytest.mark.parametrize("flip", [False, True])
def test_crowd_regions_reach_the_matcher(tmp_path, flip):
    """Anchors inside image 1's crowd region are ignored, not background."""
    from sadpipe.modeling.anchors import AnchorLayout
    from sadpipe.modeling.targets import BACKGROUND, IGNORE, build_targets

    sample = dataset(tmp_path, flip=flip)[(0, 0)]
    batch = collate([sample], size_divisibility=128)
    anchors = AnchorLayout(size_factor=1.0).anchors(tuple(batch["images"].shape[-2:]))
    labels, _ = build_targets(anchors, batch["targets"])
    without, _ = build_targets(anchors, [{k: v for k, v in t.items() if k != "crowd_boxes"}
                                         for t in batch["targets"]])
    changed = labels[0] != without[0]
    assert changed.any()
    assert (without[0][changed] == BACKGROUND).all() and (labels[0][changed] == IGNORE).all()
    x0, y0, x1, y1 = sample["crowd_boxes"][0].tolist()
    inside = anchors[changed]
    centres = (inside[:, :2] + inside[:, 2:]) / 2
    assert ((centres[:, 0] > x0) & (centres[:, 0] < x1) & (centres[:, 1] < y1)).all()
