"""`sadpipe pseudo-label` on tiny images against a direct use of the Predictor, plus the rank
split helpers, merging with a labeled set, bad input, SIGKILL and torchrun with 2 ranks."""
import inspect
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from sadpipe.checkpoint import load_model
from sadpipe.cli import cli
from sadpipe.commands import pseudo_label as pseudo_label_command
from sadpipe.data.coco import CocoDataset
from sadpipe.engine import pseudo_label as engine
from sadpipe.engine.inference import Predictor
from sadpipe.engine.sharding import block_bounds, part_path, split_for_rank
from tests.sadpipe.conftest import (
    CATEGORIES,
    assert_one_line_error,
    make_tiny_checkpoint,
    with_categories_reversed,
    write_tiny_coco,
)

SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """An untrained toy detector whose head is scaled so its scores depend on the image
    (some images have a box >= 0.5, others do not)."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("teacher") / "teacher.pt",
                                conv_gain=8.0, cls_gain=4.0, cls_bias=-2.0)


@pytest.fixture
def unlabeled(tmp_path):
    """tmp/unl/images: 6 images 96x64 at the top, 3 images 64x96 in x/images/ (mixed sizes
    in one batch); returns (images dir, relative names sorted)."""
    _, images = write_tiny_coco(tmp_path / "unl", num_images=6, seed=1)
    write_tiny_coco(images / "x", num_images=3, seed=2, size=(64, 96))
    names = [f"{i:04d}.png" for i in range(6)] + [f"x/images/{i:04d}.png" for i in range(3)]
    return images, names


def run(*args):
    return CliRunner().invoke(cli, ["pseudo-label", *map(str, args)])


def reference_detections(teacher, images_dir, names, batch_size):
    """Predictor on the images, batch by batch in the given order: per image (width, height,
    [(category_id, [x, y, w, h], score)]) in float64."""
    model, spec = load_model(teacher)
    predictor = Predictor(model, spec)
    out = []
    for start in range(0, len(names), batch_size):
        pixels = [np.asarray(Image.open(images_dir / n).convert("RGB"))
                  for n in names[start:start + batch_size]]
        for px, det in zip(pixels, predictor(pixels)):
            boxes = det["boxes"].double().numpy()
            dets = [(spec.category_ids[int(label)],
                     [b[0], b[1], b[2] - b[0], b[3] - b[1]], float(score))
                    for b, score, label in zip(boxes, det["scores"], det["labels"])]
            out.append((px.shape[1], px.shape[0], dets))
    return out


def expected_dataset(reference, names, thresh, *, first_image_id=1, first_ann_id=1, prefix=""):
    images, annotations = [], []
    for image_id, name, (w, h, dets) in zip(range(first_image_id, 10**9), names, reference):
        kept = [d for d in dets if d[2] >= thresh and d[1][2] > 0 and d[1][3] > 0]
        if not kept:
            continue
        images.append({"id": image_id, "file_name": prefix + name, "width": w, "height": h})
        for category_id, bbox, score in kept:
            annotations.append({"id": first_ann_id + len(annotations), "image_id": image_id,
                                "category_id": category_id, "bbox": bbox,
                                "area": bbox[2] * bbox[3], "iscrowd": 0, "score": score})
    return images, annotations


def assert_annotations_match(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert {k: a[k] for k in ("id", "image_id", "category_id", "iscrowd")} == \
               {k: e[k] for k in ("id", "image_id", "category_id", "iscrowd")}
        assert a["bbox"] == pytest.approx(e["bbox"], abs=1e-3)
        assert a["area"] == pytest.approx(e["area"], rel=1e-4)
        assert a["score"] == pytest.approx(e["score"], abs=1e-6)


# ---------------------------------------------------------------------- rank splitting


@pytest.mark.parametrize("num_items", [0, 1, 5, 7, 12])
@pytest.mark.parametrize("world_size", [1, 2, 3, 5])
def test_split_for_rank_covers_items_once_in_order(num_items, world_size):
    items = [f"item{i}" for i in range(num_items)]
    blocks = [split_for_rank(items, rank, world_size) for rank in range(world_size)]
    assert sum(blocks, []) == items
    sizes = [len(b) for b in blocks]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_split_for_rank_hand_computed():
    assert [split_for_rank(range(7), r, 3) for r in range(3)] == [[0, 1, 2], [3, 4], [5, 6]]
    assert [block_bounds(2, r, 4) for r in range(4)] == [(0, 1), (1, 2), (2, 2), (2, 2)]
    assert part_path("/a/pseudo.json", 1, 2) == Path("/a/.pseudo.json.part-00001-of-00002")
    for rank, world in [(2, 2), (-1, 2), (0, 0)]:
        with pytest.raises(ValueError):
            split_for_rank([1, 2], rank, world)


def test_command_defaults_are_the_engines():
    options = {p.name: p.default for p in pseudo_label_command.command.params}
    engine_defaults = inspect.signature(engine.pseudo_label).parameters
    for name, value in (("score_thresh", 0.5), ("batch_size", 4)):
        assert options[name] == engine_defaults[name].default == value


def test_command_module_loads_no_torch():
    """The command's defaults come from cuda_ops.constants, which `--help` reads without torch."""
    check = ("import sys, sadpipe.commands.pseudo_label, sadpipe.config; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                         check=True, env=SUBPROCESS_ENV)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- labeling


def test_labels_match_direct_predictor(teacher, unlabeled, tmp_path):
    images_dir, names = unlabeled
    reference = reference_detections(teacher, images_dir, names, batch_size=3)
    best = sorted(max(d[2] for d in dets) for _, _, dets in reference)
    thresh = round((best[3] + best[4]) / 2, 6)   # 4 of 9 images have no box >= thresh
    assert best[3] < thresh < best[4]

    out = tmp_path / "out" / "pseudo.json"
    result = run("--teacher", teacher, "--images", images_dir, "--out", out,
                 "--score-thresh", thresh, "--batch-size", 3, "--device", "cpu")
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    images, annotations = expected_dataset(reference, names, thresh)
    assert len(images) == 5 and data["images"] == images
    assert_annotations_match(data["annotations"], annotations)
    assert data["categories"] == CATEGORIES
    assert data["info"]["images_root"] == str(images_dir.resolve())
    assert data["info"]["images_without_boxes"] == 4 and data["info"]["skipped_images"] == []
    assert f"images in: 9; kept: 5; no box >= {thresh:g}: 4; unreadable: 0" in result.output
    assert f"{len(annotations)} boxes" in result.output

    dataset = CocoDataset(out, images_dir)   # what later stages read
    assert [r.image_id for r in dataset.records] == [im["id"] for im in images]
    assert all(r.scores is not None and (r.scores >= thresh).all() for r in dataset.records)

    again = tmp_path / "again.json"
    assert run("--teacher", teacher, "--images", images_dir, "--out", again, "--score-thresh",
               thresh, "--batch-size", 3, "--device", "cpu", "--quiet").output == ""
    assert again.read_bytes() == out.read_bytes()
    assert sorted(p.name for p in out.parent.iterdir()) == ["pseudo.json"]


def test_image_info_ids_and_unreadable_images(teacher, unlabeled, tmp_path):
    images_dir, names = unlabeled
    (images_dir / "broken.png").write_bytes(b"not a png at all")
    info_images = [{"id": 40, "file_name": "0002.png", "width": 96, "height": 64},
                   {"id": 10, "file_name": "x/images/0001.png", "width": 64, "height": 96},
                   {"id": 20, "file_name": "broken.png", "width": 96, "height": 64},
                   {"id": 30, "file_name": "missing.png", "width": 96, "height": 64},
                   {"id": 50, "file_name": "0003.png", "width": 50, "height": 64}]
    image_info = tmp_path / "info.json"
    image_info.write_text(json.dumps({"images": info_images, "categories": CATEGORIES}))
    out = tmp_path / "pseudo.json"
    result = run("--teacher", teacher, "--images", images_dir, "--image-info", image_info,
                 "--out", out, "--score-thresh", 0.0, "--batch-size", 2)
    assert result.exit_code == 0, result.output

    data = json.loads(out.read_text())
    readable = ["x/images/0001.png", "0002.png"]   # in id order: 10, 40
    reference = reference_detections(teacher, images_dir, readable, batch_size=1)
    expected = [expected_dataset([ref], [name], 0.0, first_image_id=image_id)
                for ref, name, image_id in zip(reference, readable, (10, 40))]
    assert data["images"] == [e[0][0] for e in expected]
    for image_id, (_, anns) in zip((10, 40), expected):
        mine = [a for a in data["annotations"] if a["image_id"] == image_id]
        assert_annotations_match([{**a, "id": 0} for a in mine], [{**a, "id": 0} for a in anns])
    assert [a["id"] for a in data["annotations"]] == list(range(1, len(data["annotations"]) + 1))

    skipped = {s["file_name"]: s["error"] for s in data["info"]["skipped_images"]}
    assert list(skipped) == ["broken.png", "missing.png", "0003.png"]
    assert "cannot decode image" in skipped["broken.png"]
    assert "image file not found" in skipped["missing.png"]
    assert "image is 96x64 but the image info says 50x64" in skipped["0003.png"]
    assert "images in: 5; kept: 2; no box >= 0: 0; unreadable: 3" in result.output
    for name in skipped:
        assert f"skipped {name}: " in result.output


def test_merge_with_labeled_set(teacher, unlabeled, tmp_path):
    images_dir, names = unlabeled
    labeled_json, labeled_dir = write_tiny_coco(tmp_path / "lab", num_images=4, seed=3)
    labeled = json.loads(labeled_json.read_text())
    labeled["annotations"][0]["id"] = 100          # ids need not be contiguous
    labeled["annotations"][1]["license"] = 7       # extra fields are kept
    labeled_json.write_text(json.dumps(labeled))
    out = tmp_path / "pseudo.json"
    result = run("--teacher", teacher, "--images", images_dir, "--out", out,
                 "--merge-with", labeled_json, "--merge-images", labeled_dir)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    root = tmp_path.resolve()
    assert data["info"]["images_root"] == str(root) and str(root) in result.output
    assert data["info"]["unlabeled_id_offset"] == 4

    n_lab = len(labeled["images"])
    assert data["images"][:n_lab] == [{**im, "file_name": "lab/images/" + im["file_name"]}
                                      for im in labeled["images"]]
    assert data["annotations"][:len(labeled["annotations"])] == \
           [{**a, "score": 1.0} for a in labeled["annotations"]]

    reference = reference_detections(teacher, images_dir, names, batch_size=4)
    images, annotations = expected_dataset(reference, names, 0.5, first_image_id=5,
                                           first_ann_id=101, prefix="unl/images/")
    assert data["images"][n_lab:] == images and len(images) >= 1
    assert_annotations_match(data["annotations"][len(labeled["annotations"]):], annotations)

    dataset = CocoDataset(out, root)
    assert len(dataset) == n_lab + len(images)
    assert all(dataset.image_path(r).is_file() for r in dataset.records)


def test_category_listing_order_of_the_inputs_does_not_matter(teacher, unlabeled, tmp_path):
    """An image-info file and a labeled set that list the categories in another order give
    the same pseudo-labels; the output lists them in class-index order."""
    images_dir, names = unlabeled
    labeled_json, labeled_dir = write_tiny_coco(tmp_path / "lab", num_images=3, seed=3)
    info = tmp_path / "info.json"
    info.write_text(json.dumps({"images": [{"id": 5, "file_name": names[0], "width": 96,
                                            "height": 64}], "categories": CATEGORIES}))
    outputs = []
    for name in ("sorted", "reversed"):
        image_info, labeled = info, labeled_json
        if name == "reversed":
            image_info = with_categories_reversed(info, tmp_path / "info_reversed.json")
            labeled = with_categories_reversed(labeled_json, tmp_path / "lab_reversed.json")
        out = tmp_path / f"{name}.json"
        result = run("--teacher", teacher, "--images", images_dir, "--image-info", image_info,
                     "--merge-with", labeled, "--merge-images", labeled_dir, "--out", out,
                     "--score-thresh", 0.0, "--quiet")
        assert result.exit_code == 0, result.output
        data = json.loads(out.read_text())
        data["info"].pop("merged_with")
        outputs.append(data)
    assert outputs[0] == outputs[1]
    assert outputs[0]["categories"] == CATEGORIES and len(outputs[0]["images"]) == 4


def test_merge_refuses_labeled_set_with_other_categories(teacher, unlabeled, tmp_path):
    images_dir, _ = unlabeled
    labeled_json, labeled_dir = write_tiny_coco(tmp_path / "lab", num_images=2)
    labeled = json.loads(labeled_json.read_text())
    labeled["categories"][1]["name"] = "circle"
    labeled_json.write_text(json.dumps(labeled))
    out = tmp_path / "pseudo.json"
    result = run("--teacher", teacher, "--images", images_dir, "--out", out,
                 "--merge-with", labeled_json, "--merge-images", labeled_dir)
    assert_one_line_error(result, f"{labeled_json}: categories differ",
                          "only in this file: 5 'circle'", "only in the checkpoint: 5 'disc'")
    assert not out.exists()


def test_merge_options_go_together(teacher, unlabeled, tmp_path):
    result = run("--teacher", teacher, "--images", unlabeled[0], "--out", tmp_path / "p.json",
                 "--merge-with", tmp_path / "train.json")
    assert result.exit_code == 2 and "--merge-with and --merge-images go together" in result.output


def _not_sadpipe(path):
    torch.save({"weights": torch.zeros(2)}, path)


def _garbage(path):
    path.write_bytes(b"\x00garbage")


@pytest.mark.parametrize("make, message", [
    (None, "checkpoint file not found"),
    (_not_sadpipe, "not a sadpipe checkpoint"),
    (_garbage, "not a readable checkpoint"),
])
def test_bad_teacher_is_one_line_error(unlabeled, tmp_path, make, message):
    ckpt = tmp_path / "teacher.pt"
    if make is not None:
        make(ckpt)
    out = tmp_path / "pseudo.json"
    result = run("--teacher", ckpt, "--images", unlabeled[0], "--out", out)
    assert_one_line_error(result, f"{ckpt}: {message}")
    assert not out.exists()


def test_empty_images_folder_is_one_line_error(teacher, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("--teacher", teacher, "--images", tmp_path / "empty", "--out", tmp_path / "p.json")
    assert_one_line_error(result, "empty: no image files")


# ------------------------------------------------------------------ processes, signals


def _cli(*args):
    return [sys.executable, "-m", "sadpipe.cli", "pseudo-label", *map(str, args)]


def test_sigkill_leaves_no_output_and_rerun_completes(teacher, tmp_path):
    images = tmp_path / "many"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{i:03d}.png")
    out = tmp_path / "pseudo.json"
    args = ("--teacher", teacher, "--images", images, "--out", out, "--batch-size", 1,
            "--score-thresh", 0.0, "--device", "cpu")
    proc = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=SUBPROCESS_ENV)
    seen = []
    while not (seen and seen[-1].startswith("pseudo-label: ")):  # progress: 2/40 images done
        seen.append(proc.stderr.readline().decode())
        assert seen[-1], "run ended before labeling started: " + "".join(seen)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL       # killed mid-run, not finished
    assert not out.exists()

    rerun = subprocess.run(_cli(*args, "--quiet"), capture_output=True, env=SUBPROCESS_ENV)
    assert rerun.returncode == 0, rerun.stderr.decode()
    data = json.loads(out.read_text())
    assert [im["file_name"] for im in data["images"]] == [f"{i:03d}.png" for i in range(40)]


def test_torchrun_two_ranks_equals_single_process(teacher, unlabeled, tmp_path):
    images_dir, _ = unlabeled
    (images_dir / "0003.png").write_bytes(b"truncated")   # skipped on rank 0 (batches 0-2)
    (images_dir / "x" / "images" / "0001.png").write_bytes(b"")   # skipped on rank 1 (3-4)
    args = ("--teacher", teacher, "--images", images_dir, "--batch-size", 2, "--device", "cpu",
            "--quiet")
    single = subprocess.run(_cli(*args, "--out", tmp_path / "single.json"), capture_output=True,
                            env=SUBPROCESS_ENV)
    assert single.returncode == 0, single.stderr.decode()
    stale = part_path(tmp_path / "multi.json", 2, 3)   # left by a killed 3-rank run
    stale.write_text("{}")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node=2", "-m", "sadpipe.cli", "pseudo-label", *map(str, args),
                "--out", str(tmp_path / "multi.json")]
    multi = subprocess.run(torchrun, capture_output=True, env=SUBPROCESS_ENV)
    assert multi.returncode == 0, multi.stderr.decode()

    assert (tmp_path / "multi.json").read_bytes() == (tmp_path / "single.json").read_bytes()
    data = json.loads((tmp_path / "multi.json").read_text())
    assert [s["file_name"] for s in data["info"]["skipped_images"]] == ["0003.png",
                                                                     "x/images/0001.png"]
    assert len(data["images"]) + data["info"]["images_without_boxes"] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multi.json", "single.json", "unl"]
