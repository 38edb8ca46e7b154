import numpy as np
import torch

from sadpipe.data.transforms import (
    DETECTRON_PIXEL_MEANS,
    Preprocessing,
    aspect_batches,
    make_recipe,
    make_view,
    renormalize,
)

TORCHVISION = Preprocessing(min_size=32, max_size=64)
DETECTRON = Preprocessing(min_size=32, max_size=64, mean=DETECTRON_PIXEL_MEANS, std=(1.0, 1.0, 1.0),
                          channel_order="bgr", pixel_range=255.0)
IMAGE = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)


def test_detectron_input_is_bgr_pixels_minus_means():
    view = make_view(IMAGE, make_recipe(DETECTRON, 32, 48), DETECTRON)
    expected = IMAGE[:, :, ::-1].astype(np.float32) - np.array(DETECTRON_PIXEL_MEANS, np.float32)
    torch.testing.assert_close(view, torch.from_numpy(expected.transpose(2, 0, 1).copy()), rtol=0, atol=0)


def test_renormalize_between_conventions():
    recipe = make_recipe(TORCHVISION, 32, 48)
    rgb = make_view(IMAGE, recipe, TORCHVISION)
    bgr = make_view(IMAGE, recipe, DETECTRON)
    torch.testing.assert_close(renormalize(rgb, TORCHVISION, DETECTRON), bgr, rtol=0, atol=1e-4)
    torch.testing.assert_close(renormalize(bgr, DETECTRON, TORCHVISION), rgb, rtol=0, atol=1e-5)


def test_new_fields_are_written_only_when_set():
    """Files written before channel_order / pixel_range existed read and compare unchanged."""
    old = {"min_size": 32, "max_size": 64, "mean": [0.485, 0.456, 0.406],
           "std": [0.229, 0.224, 0.225], "size_divisibility": 128}
    assert TORCHVISION.to_dict() == old and Preprocessing.from_dict(old) == TORCHVISION
    assert Preprocessing.from_dict(DETECTRON.to_dict()) == DETECTRON


def test_aspect_batches_put_like_shapes_together_and_keep_ties_in_order():
    # (height, width): wide 0.5, tall 2.0, square 1.0, wide, tall, square, wide
    sizes = [(50, 100), (100, 50), (80, 80), (60, 120), (120, 60), (40, 40), (30, 60)]
    assert aspect_batches(sizes, 3) == [[0, 3, 6], [2, 5, 1], [4]]
    assert aspect_batches(sizes, 10) == [[0, 3, 6, 2, 5, 1, 4]]
    assert aspect_batches([], 4) == []
