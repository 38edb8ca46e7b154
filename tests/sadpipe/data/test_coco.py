"""Reading and validating COCO-format files; records; image decoding."""
import json

import numpy as np
import pytest
from PIL import Image

from sadpipe.data.coco import CocoDataset, ImageError, ImageRecord, open_image, read_coco_json
from sadpipe.errors import UserError


def dataset_dict() -> dict:
    """Image 7 has a crowd box, a box poking 0.5 px out of the image and a normal box;
    image 2 has one box; image 5 has none. Categories 9 and 4, listed out of order."""
    return {
        "images": [
            {"id": 7, "file_name": "sub/seven.png", "width": 40, "height": 30},
            {"id": 2, "file_name": "two.png", "width": 20, "height": 20},
            {"id": 5, "file_name": "five.png", "width": 10, "height": 10},
        ],
        "categories": [{"id": 9, "name": "kite"}, {"id": 4, "name": "bird"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 9, "bbox": [1, 2, 10, 5], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 4, "bbox": [0, 0, 40, 30], "iscrowd": 1},
            {"id": 3, "image_id": 7, "category_id": 4, "bbox": [-0.5, 20, 10.5, 10.5]},
            {"id": 8, "image_id": 2, "category_id": 9, "bbox": [3.5, 4.25, 6, 2]},
        ],
    }


def write(tmp_path, data, name="train.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def save_image(path, size, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color=0 if mode == "L" else (10, 20, 30)).save(path)


def test_records(tmp_path):
    dataset = CocoDataset(write(tmp_path, dataset_dict()), tmp_path)
    assert dataset.categories == [{"id": 4, "name": "bird"}, {"id": 9, "name": "kite"}]
    assert dataset.category_ids == [4, 9]
    assert [r.image_id for r in dataset.records] == [2, 5, 7]
    two, five, seven = dataset.records

    assert two == ImageRecord(2, "two.png", 20, 20, two.boxes, two.category_ids, None,
                              two.crowd_boxes)
    np.testing.assert_array_equal(two.boxes, [[3.5, 4.25, 9.5, 6.25]])
    assert five.boxes.shape == (0, 4) and five.category_ids.shape == (0,)
    assert two.crowd_boxes.shape == five.crowd_boxes.shape == (0, 4)
    # the crowd box is a region apart; the box 0.5 px outside the image is clipped to it
    np.testing.assert_array_equal(seven.boxes, [[1, 2, 11, 7], [0, 20, 10, 30]])
    np.testing.assert_array_equal(seven.category_ids, [9, 4])
    np.testing.assert_array_equal(seven.crowd_boxes, [[0, 0, 40, 30]])
    assert seven.boxes.dtype == seven.crowd_boxes.dtype == np.float32
    assert seven.category_ids.dtype == np.int64
    assert seven.scores is None
    assert dataset.image_path(seven) == tmp_path / "sub" / "seven.png"


def test_optional_fields_filled(tmp_path):
    data = read_coco_json(write(tmp_path, dataset_dict()))
    ann = data["annotations"][3]
    assert ann["area"] == 12 and ann["iscrowd"] == 0
    assert data["annotations"][1]["iscrowd"] == 1


def test_pseudo_label_scores(tmp_path):
    data = dataset_dict()
    for i, ann in enumerate(data["annotations"]):
        ann["score"] = 0.5 + 0.1 * i
    dataset = CocoDataset(write(tmp_path, data), tmp_path)
    two, five, seven = dataset.records
    np.testing.assert_allclose(seven.scores, [0.5, 0.7])
    assert seven.scores.dtype == np.float32
    np.testing.assert_allclose(two.scores, [0.8])
    assert five.scores.shape == (0,)


def test_image_info_only_file(tmp_path):
    data = {"images": dataset_dict()["images"]}
    with pytest.raises(UserError, match="train.json: 'categories' is missing"):
        read_coco_json(write(tmp_path, data))
    dataset = CocoDataset(write(tmp_path, data), tmp_path, require_annotations=False)
    assert [len(r.boxes) for r in dataset.records] == [0, 0, 0]
    assert dataset.categories == []


def drop(key):
    return lambda d: d.pop(key)


def set_ann(index, **fields):
    return lambda d: d["annotations"][index].update(fields)


@pytest.mark.parametrize("edit, message", [
    (drop("images"), "'images' is missing"),
    (drop("annotations"), "'annotations' is missing"),
    (lambda d: d.update(images={}), "'images' must be a list, found a object"),
    (lambda d: d.update(categories=[]), "'categories' is empty"),
    (set_ann(0, category_id=99), "annotations[0].category_id 99 is not in categories"),
    (set_ann(3, image_id=3), "annotations[3].image_id 3 is not in images"),
    (set_ann(0, bbox=[1, 2, 0, 5]), "annotations[0].bbox [1, 2, 0, 5] has non-positive"),
    (set_ann(0, bbox=[1, 2, 10, -5]), "annotations[0].bbox [1, 2, 10, -5] has non-positive"),
    (set_ann(0, bbox=[35, 2, 6.5, 5]), "annotations[0].bbox [35, 2, 6.5, 5] is outside the "
                                       "40x30 image"),
    (set_ann(0, bbox=[-1.5, 2, 5, 5]), "is outside the 40x30 image"),
    (set_ann(0, bbox=[40.5, 2, 0.5, 5]), "is outside"),  # within tolerance, but no overlap
    (set_ann(0, bbox=[1, 2, 10]), "annotations[0].bbox must be [x, y, width, height]"),
    (set_ann(0, bbox=[1, 2, "10", 5]), "annotations[0].bbox must be"),
    (set_ann(0, iscrowd=2), "annotations[0].iscrowd must be 0 or 1"),
    (set_ann(1, id=3), "annotations[2].id 3 is used twice"),
    (lambda d: d["images"][2].update(id=7), "images[2].id 7 is used twice"),
    (lambda d: d["images"][2].update(width=0), "images[2].width must be a positive integer"),
    (lambda d: d["images"][1].pop("file_name"), "images[1].file_name is missing"),
    (lambda d: d["images"][1].update(file_name="../x.png"), "images[1].file_name must be a "
                                                             "relative path"),
    (lambda d: d["categories"][1].update(id=9), "categories[1].id 9 is used twice"),
    (lambda d: d["categories"][1].update(name="kite"), 'categories[1].name "kite" is used'),
    (set_ann(2, score=0.5), "annotations[0].score is missing (other annotations have one)"),
    (set_ann(0, score=1.5), "annotations[0].score must be a number in [0, 1]"),
    (lambda d: d["annotations"].append(7), "annotations[4] must be an object, found a number"),
])
def test_invalid_files(tmp_path, edit, message):
    data = dataset_dict()
    edit(data)
    path = write(tmp_path, data)
    with pytest.raises(UserError) as info:
        read_coco_json(path)
    text = info.value.message
    assert text.startswith(f"{path}: ") and message in text, text
    assert "\n" not in text


def test_box_within_tolerance_is_accepted(tmp_path):
    data = dataset_dict()
    data["annotations"][0]["bbox"] = [-1, -1, 42, 32]  # 1 px out on every side
    record = CocoDataset(write(tmp_path, data), tmp_path).records[2]
    np.testing.assert_array_equal(record.boxes[0], [0, 0, 40, 30])


@pytest.mark.parametrize("content, message", [
    (None, "file not found"),
    ("{'images': []}", "not valid JSON"),
    ("[]", "expected a JSON object"),
])
def test_unreadable_files(tmp_path, content, message):
    path = tmp_path / "train.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=f"train.json: {message}"):
        read_coco_json(path)


def test_missing_images_folder(tmp_path):
    with pytest.raises(UserError, match="nowhere: images folder not found"):
        CocoDataset(write(tmp_path, dataset_dict()), tmp_path / "nowhere")


GRADIENT = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3) * 3   # (H, W, RGB), exact


@pytest.mark.parametrize("mode, suffix", [("RGB", "png"), ("L", "png"), ("RGBA", "png"),
                                          ("LA", "png"), ("P", "png"), ("L", "jpg"),
                                          ("RGB", "jpg")])
def test_open_image_gives_rgb_of_every_mode(tmp_path, mode, suffix):
    """Grayscale is repeated on the three channels, alpha is dropped, a palette is looked
    up; JPEG within its rounding."""
    gray = GRADIENT[..., 0]
    alpha = np.full(gray.shape, 7, np.uint8)   # nearly transparent: pixels stay as stored
    sources = {"RGB": (GRADIENT, GRADIENT), "L": (gray, np.repeat(gray[..., None], 3, axis=2)),
               "RGBA": (np.dstack([GRADIENT, alpha]), GRADIENT),
               "LA": (np.dstack([gray, alpha]), np.repeat(gray[..., None], 3, axis=2)),
               "P": (GRADIENT, GRADIENT)}
    pixels, expected = sources[mode]
    image = Image.fromarray(pixels)
    if mode == "P":
        image = image.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=0)
        palette = np.array(image.getpalette(), dtype=np.uint8).reshape(-1, 3)
        expected = palette[np.asarray(image)]   # each index looked up in the palette
    path = tmp_path / f"image.{suffix}"
    image.save(path, quality=100) if suffix == "jpg" else image.save(path)
    assert Image.open(path).mode == mode

    rgb = open_image(path)
    assert rgb.mode == "RGB" and rgb.size == (6, 4)
    tolerance = 3 if suffix == "jpg" else 0
    np.testing.assert_allclose(np.asarray(rgb, dtype=int), expected.astype(int), atol=tolerance)


@pytest.mark.parametrize("pixels", [np.full((3, 4), 1000, np.uint16),
                                    np.full((3, 4), 0.5, np.float32)])
def test_open_image_refuses_more_than_8_bits(tmp_path, pixels):
    path = tmp_path / ("wide.png" if pixels.dtype == np.uint16 else "wide.tif")
    Image.fromarray(pixels).save(path)
    with pytest.raises(ImageError, match="16-bit or float pixels"):
        open_image(path)


def test_load_image_checks_size(tmp_path):
    dataset = CocoDataset(write(tmp_path, dataset_dict()), tmp_path)
    two, _, seven = dataset.records
    save_image(tmp_path / "sub" / "seven.png", (40, 30))
    assert np.asarray(dataset.load_image(seven))[0, 0].tolist() == [10, 20, 30]
    save_image(tmp_path / "two.png", (20, 21))
    with pytest.raises(ImageError, match="two.png: image is 20x21 but .* says 20x20"):
        dataset.load_image(two)


@pytest.mark.parametrize("content, message", [
    (None, "image file not found"),
    (b"not an image at all", "cannot decode image"),
    ("truncated", "cannot decode image"),
])
def test_bad_image_files(tmp_path, content, message):
    dataset = CocoDataset(write(tmp_path, dataset_dict()), tmp_path)
    record = dataset.records[0]
    path = dataset.image_path(record)
    if content == "truncated":
        save_image(path, (20, 20))
        path.write_bytes(path.read_bytes()[:60])
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageError) as info:
        dataset.load_image(record)
    assert isinstance(info.value, UserError)
    assert info.value.message == f"{path}: {message}"
