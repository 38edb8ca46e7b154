"""The embedded toy dataset: determinism, COCO schema, box geometry, difficulty, safety."""
import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from pycocotools.coco import COCO

from sadpipe.cli import cli
from sadpipe.data import toy, toy_paint, toy_scene, toy_shapes
from sadpipe.data.toy import generate_toy_dataset
from sadpipe.errors import UserError

SMALL = dict(seed=0, num_train=20, num_unlabeled=6, num_val=10)
SPLIT_IDS = dict(toy.SPLITS)


def _files(root: Path) -> dict:
    """{relative path: bytes} of every file under ``root``."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _load(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"{split}.json").read_text())


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy") / "data"
    summary = generate_toy_dataset(root, **SMALL)
    assert summary["generated"] and summary["splits"]["train"]["images"] == 20
    return root


@pytest.fixture(scope="module")
def labeled(small) -> list:
    """(image info, [annotations]) of every train and val image."""
    out = []
    for split in ("train", "val"):
        data = _load(small, split)
        for info in data["images"]:
            out.append((info, [a for a in data["annotations"] if a["image_id"] == info["id"]]))
    return out


# --- determinism -------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes(small, tmp_path):
    generate_toy_dataset(tmp_path / "again", **SMALL)
    first, second = _files(small), _files(tmp_path / "again")
    assert len(first) == 20 + 6 + 10 + 3
    assert first == second


def test_other_seed_gives_other_images(small, tmp_path):
    generate_toy_dataset(tmp_path / "other", **{**SMALL, "seed": 1})
    other = _files(tmp_path / "other")
    mine = _files(small)
    image_names = [name for name in mine if name.endswith(".jpg")]
    assert all(mine[name] != other[name] for name in image_names)
    assert _load(small, "train")["annotations"] != _load(tmp_path / "other", "train")["annotations"]


def test_more_images_leave_earlier_ones_unchanged(small, tmp_path):
    generate_toy_dataset(tmp_path / "fewer", seed=0, num_train=5, num_unlabeled=2, num_val=3)
    fewer = _files(tmp_path / "fewer")
    mine = _files(small)
    assert all(mine[name] == data for name, data in fewer.items() if name.endswith(".jpg"))
    few, many = _load(tmp_path / "fewer", "train"), _load(small, "train")
    assert few["images"] == many["images"][:5]
    ids = {info["id"] for info in few["images"]}
    strip = lambda anns: [{k: v for k, v in a.items() if k != "id"} for a in anns]  # noqa: E731
    assert strip(few["annotations"]) == strip([a for a in many["annotations"] if a["image_id"] in ids])


def test_worker_processes_write_the_same_bytes(small, tmp_path):
    assert SMALL["num_train"] > toy.CHUNK  # so the train split really goes through the pool
    generate_toy_dataset(tmp_path / "parallel", **SMALL, workers=2)
    assert _files(tmp_path / "parallel") == _files(small)


# --- schema ------------------------------------------------------------------------------


def test_labeled_files_load_in_pycocotools(small):
    for split, count in (("train", 20), ("val", 10)):
        coco = COCO(str(small / "annotations" / f"{split}.json"))
        assert len(coco.getImgIds()) == count
        cat_ids = sorted(coco.getCatIds())
        assert len(cat_ids) >= 8
        assert cat_ids != list(range(1, len(cat_ids) + 1)), "category ids should not be contiguous"
        assert len({c["name"] for c in coco.loadCats(cat_ids)}) == len(cat_ids)
        ann_ids = sorted(coco.getAnnIds())
        assert ann_ids == list(range(1, len(ann_ids) + 1))
        for ann in coco.loadAnns(ann_ids):
            assert ann["iscrowd"] == 0 and ann["category_id"] in cat_ids and ann["image_id"] in coco.imgs
        data = coco.dataset
        assert {"info", "licenses", "images", "annotations", "categories"} <= set(data)


def test_unlabeled_file_has_images_and_categories_only(small):
    data = _load(small, "unlabeled")
    assert "annotations" not in data
    assert len(data["images"]) == 6
    assert data["categories"] == _load(small, "train")["categories"]
    assert {"info", "licenses"} <= set(data)


def test_every_listed_image_exists_with_its_size_and_ids_are_unique(small):
    seen = set()
    for split, _ in toy.SPLITS:
        for info in _load(small, split)["images"]:
            with Image.open(small / "images" / split / info["file_name"]) as img:
                assert img.format == "JPEG" and img.size == (info["width"], info["height"])
            assert info["id"] not in seen
            seen.add(info["id"])
    assert len(seen) == 36


def test_files_hold_what_the_renderer_drew(small):
    """The JPEG is the rendered image (up to JPEG loss) and the annotations are its boxes."""
    data = _load(small, "val")
    for index in (0, 7):
        info = data["images"][index]
        toy_image = toy_scene.render_toy_image(0, SPLIT_IDS["val"], index)
        stored = (small / "images" / "val" / info["file_name"]).read_bytes()
        encoded = io.BytesIO()
        Image.fromarray(toy_image.pixels).save(encoded, format="JPEG", quality=90, subsampling="4:4:4")
        assert stored == encoded.getvalue()
        decoded = np.asarray(Image.open(io.BytesIO(stored)), dtype=np.float64)
        assert np.abs(decoded - toy_image.pixels).mean() < 6.0
        written = [{k: a[k] for k in ("category_id", "bbox", "area")}
                   for a in data["annotations"] if a["image_id"] == info["id"]]
        assert written == toy_image.annotations()


# --- geometry ----------------------------------------------------------------------------


def test_boxes_lie_inside_their_images(labeled):
    for info, anns in labeled:
        for ann in anns:
            x, y, w, h = ann["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= info["width"] and y + h <= info["height"]
            assert 0 < ann["area"] <= w * h


def test_boxes_are_tight_around_each_objects_visible_pixels():
    """Reference: the extent of each object's pixels in the owner map, found with numpy."""
    for index in range(6):
        toy_image = toy_scene.render_toy_image(3, SPLIT_IDS["train"], index)
        for k, ann in enumerate(toy_image.annotations()):
            ys, xs = np.nonzero(toy_image.owner == k + 1)
            expected = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert ann["bbox"] == [float(v) for v in expected]
            assert ann["area"] == float(len(xs))


def test_square_rasterizes_to_its_pixels():
    layer = toy_paint.rasterize(fills=[np.array([[10.0, 10.0], [30.0, 10.0], [30.0, 30.0], [10.0, 30.0]])])
    ys, xs = np.nonzero(layer.alpha >= toy_scene.OPAQUE)
    assert (xs.min() + layer.x0, xs.max() + layer.x0) == (10, 29)
    assert (ys.min() + layer.y0, ys.max() + layer.y0) == (10, 29)
    assert len(xs) == 400
    assert layer.alpha.sum() == pytest.approx(400, rel=0.05)


def test_pose_sets_the_longer_side_and_rotates():
    square = toy_shapes.Outline((np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]),))
    # Rotated 45 degrees, a square whose box is 40 px wide has sides 40 / sqrt(2): area 800.
    turned = toy_shapes.pose(square, size=40, angle=np.pi / 4)
    assert np.allclose(turned.extent(), (-20, -20, 20, 20))
    layer = toy_paint.rasterize(fills=toy_shapes.translate(turned, 50, 50).solid)
    assert layer.alpha.sum() == pytest.approx(800, rel=0.03)
    # Stretched 2:1 and not rotated: a 60 x 30 rectangle.
    x0, y0, x1, y1 = toy_shapes.pose(square, size=60, aspect=2.0).extent()
    assert (x1 - x0, y1 - y0) == pytest.approx((60, 30))


def test_holes_are_cut_out_of_rings():
    rng = np.random.default_rng(0)
    ring_index = [name for _, name, _ in toy_shapes.CATEGORIES].index("ring")
    ring = toy_shapes.translate(toy_shapes.pose(toy_shapes.sample_outline(ring_index, rng), size=60), 40, 40)
    layer = toy_paint.rasterize(fills=ring.solid, holes=ring.holes)
    centre = layer.alpha[40 - layer.y0, 40 - layer.x0]
    edge = layer.alpha[40 - layer.y0, 40 + 28 - layer.x0]  # just inside the outer radius 30
    assert centre == 0.0 and edge == 1.0


# --- difficulty --------------------------------------------------------------------------


def test_object_sizes_span_14_to_80_pixels(labeled):
    """Boxes are the visible part of objects 14-80 px long (log-uniform): the anchors of
    P3-P5 at size factor 2 (16-101 px) serve them; occlusion and truncation make some
    smaller."""
    longer = np.array([max(a["bbox"][2:]) for _, anns in labeled for a in anns])
    assert longer.min() <= 16 and 64 <= longer.max() <= 80
    for low, high, share in ((0, 32, 0.2), (32, 64, 0.2), (64, 1000, 0.03)):
        assert np.mean((longer >= low) & (longer < high)) >= share


def test_objects_mostly_take_their_category_hue():
    """The colour cue: a typical colour lies within the jitter of the category's hue; shape
    still decides, as other instances take any hue."""
    import colorsys

    rng = np.random.default_rng(0)
    for k in range(len(toy_shapes.CATEGORIES)):
        for _ in range(20):
            rgb = toy_shapes.object_color(k, rng, typical=True) / 255.0
            hue = colorsys.rgb_to_hsv(*rgb)[0]
            distance = abs((hue - toy_shapes.typical_hue(k) + 0.5) % 1.0 - 0.5)
            assert distance <= toy_shapes.TYPICAL_HUE_JITTER + 1e-6
    assert 0.5 <= toy_shapes.TYPICAL_COLOR_PROB < 1.0


def test_all_categories_appear(labeled, small):
    used = {a["category_id"] for _, anns in labeled for a in anns}
    assert len(used) >= 8
    assert used == {c["id"] for c in _load(small, "train")["categories"]}


def test_image_sizes_and_aspect_ratios_vary(labeled):
    sizes = [(info["width"], info["height"]) for info, _ in labeled]
    assert all(128 <= side <= 192 for size in sizes for side in size)
    ratios = {round(w / h, 1) for w, h in sizes}
    assert len(ratios) >= 3 and min(ratios) < 1 < max(ratios)
    counts = [len(anns) for _, anns in labeled]
    assert min(counts) <= 2 and max(counts) >= 5


def test_objects_overlap_but_stay_at_least_half_visible():
    overlapping_pairs, occluded = 0, 0
    for index in range(20):
        toy_image = toy_scene.render_toy_image(0, SPLIT_IDS["train"], index)
        boxes = [a["bbox"] for a in toy_image.annotations()]
        for i, (xa, ya, wa, ha) in enumerate(boxes):
            for xb, yb, wb, hb in boxes[i + 1:]:
                overlapping_pairs += (min(xa + wa, xb + wb) > max(xa, xb)
                                      and min(ya + ha, yb + hb) > max(ya, yb))
        for k, obj in enumerate(toy_image.objects):
            visible = int((toy_image.owner == k + 1).sum())
            assert visible >= toy_scene.MIN_VISIBLE * obj.full_pixels
            assert visible >= toy_scene.MIN_OBJECT_PIXELS
            occluded += visible < 0.9 * obj.full_pixels
    assert overlapping_pairs >= 5 and occluded >= 5


def test_unlabelled_clutter_is_drawn():
    owners = [toy_scene.render_toy_image(0, SPLIT_IDS["unlabeled"], i).owner for i in range(10)]
    with_clutter = sum((owner == toy_scene.DISTRACTOR).any() for owner in owners)
    assert with_clutter >= 8


# --- re-runs, interruptions, bad input ---------------------------------------------------

TINY = dict(seed=2, num_train=3, num_unlabeled=2, num_val=2)


def test_rerun_with_same_arguments_keeps_files(tmp_path):
    generate_toy_dataset(tmp_path, **TINY)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    summary = generate_toy_dataset(tmp_path, **TINY)
    assert not summary["generated"] and summary["splits"]["train"]["annotations"] is not None
    assert stamps == {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}


def test_rerun_with_other_arguments_regenerates(tmp_path):
    generate_toy_dataset(tmp_path / "a", **TINY)
    generate_toy_dataset(tmp_path / "a", **{**TINY, "seed": 3})
    generate_toy_dataset(tmp_path / "b", **{**TINY, "seed": 3})
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_interrupted_run_leaves_no_annotation_file(tmp_path, monkeypatch):
    generate_toy_dataset(tmp_path, **TINY)
    calls = []

    def failing(*args):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return toy_scene.render_toy_image(*args)

    monkeypatch.setattr(toy, "render_toy_image", failing)
    with pytest.raises(KeyboardInterrupt):
        generate_toy_dataset(tmp_path, **{**TINY, "seed": 4})
    assert not list((tmp_path / "annotations").glob("*.json"))
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]


def test_foreign_annotation_file_is_not_overwritten(tmp_path):
    foreign = tmp_path / "annotations" / "val.json"
    foreign.parent.mkdir()
    foreign.write_text('{"images": []}')
    with pytest.raises(UserError, match="val.json"):
        generate_toy_dataset(tmp_path, **TINY)
    assert foreign.read_text() == '{"images": []}'
    assert not (tmp_path / "images").exists()


@pytest.mark.parametrize("bad, field", [({"seed": -1}, "seed"), ({"num_train": -3}, "num_train"),
                                        ({"num_val": 2.5}, "num_val"), ({"workers": 0}, "workers")])
def test_bad_arguments_raise_user_errors(tmp_path, bad, field):
    with pytest.raises(UserError, match=field):
        generate_toy_dataset(tmp_path, **{**TINY, **bad})
    assert not any(tmp_path.iterdir())


def test_out_dir_that_is_a_file_is_a_user_error(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        generate_toy_dataset(target, **TINY)


# --- command line ------------------------------------------------------------------------


def test_command_writes_the_same_dataset_as_the_api(tmp_path):
    result = CliRunner().invoke(cli, ["toy-data", str(tmp_path / "cli"), "--seed", "2", "--num-train", "3",
                                      "--num-unlabeled", "2", "--num-val", "2"])
    assert result.exit_code == 0, result.output
    assert "train" in result.output and "3 images" in result.output
    generate_toy_dataset(tmp_path / "api", **TINY)
    assert _files(tmp_path / "cli") == _files(tmp_path / "api")


def test_command_help_explains_the_output():
    result = CliRunner().invoke(cli, ["toy-data", "--help"])
    assert result.exit_code == 0
    for text in ("annotations/train.json", "annotations/unlabeled.json", "images/val", "--num-unlabeled",
                 "--seed"):
        assert text in result.output


def test_command_reports_bad_input_in_one_line(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "train.json").write_text("not json")
    result = CliRunner().invoke(cli, ["toy-data", str(tmp_path), "--num-unlabeled", "1"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert "train.json" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["toy-data", str(tmp_path / "x"), "--num-train", "-1"])
    assert result.exit_code == 2 and "--num-train" in result.output
