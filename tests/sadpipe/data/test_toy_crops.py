"""Pretraining crops: from the generator's own split, one per object plus background, and
deterministic."""
import numpy as np
import pytest

from sadpipe.data import toy, toy_crops, toy_shapes
from sadpipe.data.toy_scene import render_toy_image


def test_pretrain_split_is_none_of_the_detection_splits():
    assert toy_crops.PRETRAIN_SPLIT_ID not in {split_id for _, split_id in toy.SPLITS}


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_one_crop_per_object_of_the_pretrain_image_plus_background(index):
    crops, labels = toy_crops.image_crops(0, index)
    objects = render_toy_image(0, toy_crops.PRETRAIN_SPLIT_ID, index).annotations()
    index_of = {cid: i for i, (cid, _, _) in enumerate(toy_shapes.CATEGORIES)}
    expected = [index_of[a["category_id"]] for a in objects]
    assert labels[:len(objects)].tolist() == expected
    assert labels[len(objects):].tolist() == [toy_crops.BACKGROUND] * (len(labels) - len(objects))
    assert crops.shape == (len(labels), toy_crops.CROP_SIZE, toy_crops.CROP_SIZE, 3)
    assert crops.dtype == np.uint8


def test_object_crop_shows_the_object():
    """The crop of an object is centred near it: its middle is mostly the object's colour,
    unlike the crop's corners (context)."""
    toy_image = render_toy_image(0, toy_crops.PRETRAIN_SPLIT_ID, 0)
    crops, _ = toy_crops.image_crops(0, 0)
    x, y, w, h = toy_image.annotations()[0]["bbox"]
    mine = toy_image.owner[int(y):int(y + h), int(x):int(x + w)] == 1
    object_mean = toy_image.pixels[int(y):int(y + h), int(x):int(x + w)][mine].mean(axis=0)
    s = toy_crops.CROP_SIZE
    centre = crops[0, s // 2 - 2:s // 2 + 2, s // 2 - 2:s // 2 + 2].reshape(-1, 3).mean(axis=0)
    assert np.abs(centre - object_mean).max() < 60


def test_crops_are_deterministic_and_independent_of_workers():
    a = toy_crops.make_crops(3, range(40), workers=1)
    b = toy_crops.make_crops(3, range(40), workers=2)
    other = toy_crops.make_crops(4, range(40), workers=1)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], other[1]) or not np.array_equal(a[0], other[0])
    assert set(a[1].tolist()) <= set(range(toy_crops.NUM_CLASSES))
