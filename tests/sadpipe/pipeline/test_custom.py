"""The shipped custom_sad pipeline end to end at toy size on a COCO-format dataset written here
by its own generator (not `sadpipe toy-data`): nested folders, PNG and JPEG in RGB, L and RGBA,
odd sizes, category ids 42, 7, 99 listed out of order (another order in each file), an image
without boxes and a crowd region. All ten stages run and the report holds the three models."""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

from sadpipe.commands.run import command as run_command
from sadpipe.pipeline import find_pipeline
from tests.sadpipe.pipeline.test_smoke import STAGES, STATS, _missing

pytestmark = pytest.mark.skipif(bool(_missing()), reason=f"not installed yet: {_missing()}")

KITE, RING, BAR = 42, 7, 99
CATEGORIES = {KITE: "kite", RING: "ring", BAR: "bar"}
LISTED = {"train": [KITE, RING, BAR], "val": [BAR, KITE, RING], "unlabeled": [RING, BAR, KITE]}
CLASS_ORDER = [RING, KITE, BAR]          # by id: class c is the (c+1)-th id
# (folder inside the split, file suffix, PIL mode, (width, height)) per image, cycled
IMAGE_KINDS = [("site_a/day1", "png", "RGB", (88, 64)), ("site_a/day2", "jpg", "L", (64, 80)),
               ("site_b", "png", "RGBA", (72, 72)), ("site_b/deep/er", "jpg", "RGB", (96, 60)),
               ("", "png", "L", (70, 90))]
COUNTS = {"train": 7, "val": 4, "unlabeled": 4}
TINY = ("vars.teacher_iters=2", "vars.student_iters=2", "vars.distill_iters=2",
        "vars.teacher_steps=[1]", "vars.student_steps=[1]", "vars.distill_steps=[1]")
CROWD_IMAGE, EMPTY_IMAGE = 101, 103      # train image ids (88x64 and 72x72)


def paint(draw, rng, category, box):
    """One object of ``category`` filling ``box`` (x0, y0, x1, y1)."""
    colour = tuple(int(c) for c in rng.integers(120, 256, size=3))
    x0, y0, x1, y1 = box
    if category == KITE:
        draw.polygon([((x0 + x1) / 2, y0), (x1, (y0 + y1) / 2), ((x0 + x1) / 2, y1),
                      (x0, (y0 + y1) / 2)], fill=colour)
    elif category == RING:
        draw.ellipse(box, outline=colour, width=3)
    else:
        draw.rectangle(box, fill=colour)


def make_image(rng, kind, objects):
    """A noisy background with ``objects`` [(category, box)] painted on, in the kind's mode."""
    _, _, mode, (w, h) = kind
    ramp = np.linspace(20, 90, w, dtype=np.float32)[None, :, None]
    pixels = np.clip(ramp + rng.normal(0, 12, size=(h, w, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for category, box in objects:
        paint(draw, rng, category, box)
    if mode == "RGBA":
        image.putalpha(Image.fromarray(rng.integers(0, 256, size=(h, w), dtype=np.uint8)))
        return image
    return image.convert(mode)


def random_objects(rng, size, count):
    w, h = size
    out = []
    for _ in range(count):
        side = int(rng.integers(14, min(w, h) // 2))
        x0, y0 = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
        out.append((int(rng.choice(CLASS_ORDER)), (x0, y0, x0 + side, y0 + side)))
    return out


def write_split(root, split, rng, first_id):
    """root/pictures/<split>/<nested>/<n>.<png|jpg> and root/labels/<split>.json."""
    images, annotations = [], []
    for n in range(COUNTS[split]):
        image_id, kind = first_id + n, IMAGE_KINDS[n % len(IMAGE_KINDS)]
        objects = [] if image_id == EMPTY_IMAGE else random_objects(rng, kind[3], 2)
        crowd = []
        if image_id == CROWD_IMAGE:   # a crowd of small rings in the lower right, one box
            crowd = [(RING, (40 + 9 * i, 40 + 7 * (i % 2), 47 + 9 * i, 47 + 7 * (i % 2)))
                     for i in range(4)]
        name = "/".join(filter(None, [kind[0], f"{image_id}.{kind[1]}"]))
        path = root / "pictures" / split / name
        path.parent.mkdir(parents=True, exist_ok=True)
        make_image(rng, kind, objects + crowd).save(path)
        images.append({"id": image_id, "file_name": name, "width": kind[3][0],
                       "height": kind[3][1]})
        for category, (x0, y0, x1, y1) in objects:
            annotations.append({"id": 1000 + len(annotations), "image_id": image_id,
                                "category_id": category, "bbox": [x0, y0, x1 - x0, y1 - y0]})
        if crowd:
            annotations.append({"id": 1000 + len(annotations), "image_id": image_id,
                                "category_id": RING, "bbox": [40, 40, 34, 14], "iscrowd": 1,
                                "area": 34 * 14, "segmentation": [[40, 40, 74, 40, 74, 54, 40, 54]]})
    data = {"images": images[::-1],
            "categories": [{"id": i, "name": CATEGORIES[i], "supercategory": "shape"}
                           for i in LISTED[split]]}
    if split != "unlabeled":
        data["annotations"] = annotations
    (root / "labels").mkdir(exist_ok=True)
    (root / "labels" / f"{split}.json").write_text(json.dumps(data))


def custom_run(root, workdir):
    sets = [f"data.root={root}"]
    for split in ("train", "val", "unlabeled"):
        sets += [f"data.{split}_annotations=labels/{split}.json",
                 f"data.{split}_images=pictures/{split}"]
    args = [str(find_pipeline("custom_sad")), "--workdir", str(workdir)]
    for item in (*sets, *TINY):
        args += ["--set", item]
    return CliRunner().invoke(run_command, args)


def test_generated_dataset_is_what_the_test_says(dataset):
    modes = {Image.open(p).mode for p in (dataset / "pictures").rglob("*.*")}
    assert modes == {"RGB", "L", "RGBA"}
    train = json.loads((dataset / "labels" / "train.json").read_text())
    assert [c["id"] for c in train["categories"]] == [KITE, RING, BAR]
    crowd = [a for a in train["annotations"] if a.get("iscrowd")]
    assert [a["image_id"] for a in crowd] == [CROWD_IMAGE]
    assert EMPTY_IMAGE not in {a["image_id"] for a in train["annotations"]}


def test_custom_pipeline_end_to_end(dataset, tmp_path, stages_in_process):
    workdir = tmp_path / "work"
    result = custom_run(dataset, workdir)
    assert result.exit_code == 0, result.output
    state = json.loads((workdir / "state.json").read_text())["stages"]
    assert list(state) == ["teacher", *STAGES[1:]]  # data given; the teacher trained on these labels
    assert all(record["status"] == "done" for record in state.values())

    report = json.loads((workdir / "report.json").read_text())
    assert report["pipeline"] == "custom_sad"
    markdown = (workdir / "report.md").read_text()
    for role, stage, title in (("teacher", "eval_teacher", "teacher"),
                               ("baseline", "eval_student", "baseline student"),
                               ("distilled", "eval_student_sad", "distilled student (SAD)")):
        eval_metrics = json.loads((workdir / "eval" / stage[5:] / "metrics.json").read_text())
        metrics = eval_metrics["bbox"]
        row = report["models"][role]
        assert row == {"model": row["model"], "stage": stage, **{k: metrics[k] for k in STATS},
                       "images_per_s": eval_metrics["inference"]["images_per_s"]}
        assert row["images_per_s"] > 0   # the model's own inference speed (sadpipe eval)
        assert f"| {row['model']} | {title} | " in markdown
    assert "| Student model | Baseline mAP | Teacher model | Baseline mAP | " \
           "Student mAP after distillation |" in markdown
    # the image without boxes is not trained on, so not cached either
    assert report["caches"]["cache_labeled"]["samples"] == COUNTS["train"] - 1

    pseudo = json.loads((workdir / "pseudo" / "pseudo.json").read_text())
    assert [c["id"] for c in pseudo["categories"]] == CLASS_ORDER
    assert [a["image_id"] for a in pseudo["annotations"] if a["iscrowd"]] == [CROWD_IMAGE]
    detections = json.loads((workdir / "eval" / "teacher" / "detections.json").read_text())
    assert {d["category_id"] for d in detections} <= set(CATEGORIES)
