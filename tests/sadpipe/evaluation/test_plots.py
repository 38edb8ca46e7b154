"""PR-curve files and plots."""
import json

import numpy as np
import pytest
from PIL import Image

from sadpipe.errors import UserError
from sadpipe.evaluation import plot_pr_curve, plot_pr_curves, read_pr_curve
from sadpipe.evaluation.report import format_metrics


def synthetic_curve(level: float) -> dict:
    recall = np.linspace(0, 1, 101)
    precision = [list(np.clip(level - t * 0.05 - 0.3 * recall, 0, 1)) for t in range(10)]
    return {"iou_thresholds": list(np.linspace(0.5, 0.95, 10)), "recall": list(recall),
            "precision": precision, "area": "all", "max_dets": 100}


def is_drawn_png(path) -> bool:
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"))
    return image.format == "PNG" and pixels.std() > 0


def test_single_curve_png(tmp_path):
    plot_pr_curve(synthetic_curve(0.9), tmp_path / "pr.png")
    assert is_drawn_png(tmp_path / "pr.png")
    assert [p.name for p in tmp_path.iterdir()] == ["pr.png"]  # no temporary left behind


def test_three_models_on_one_png(tmp_path):
    paths = {}
    for name, level in (("teacher", 0.9), ("student", 0.7), ("student+SAD", 0.8)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(synthetic_curve(level)))
    curves = {name: read_pr_curve(path) for name, path in paths.items()}
    plot_pr_curves(curves, tmp_path / "compare.png")
    assert is_drawn_png(tmp_path / "compare.png")
    single = tmp_path / "single.png"
    plot_pr_curve(curves["teacher"], single)
    with Image.open(tmp_path / "compare.png") as wide, Image.open(single) as narrow:
        assert wide.width > narrow.width  # three panels


@pytest.mark.parametrize("edit, message", [
    (lambda pr: pr.pop("recall"), "'recall' must be a non-empty list"),
    (lambda pr: pr["precision"].pop(), "'precision' needs one list per IoU threshold"),
    (lambda pr: pr["precision"][2].pop(), r"precision\[2\] must be 101 numbers"),
    (lambda pr: pr["precision"][0].__setitem__(5, "x"), r"precision\[0\] must be"),
])
def test_malformed_curve_file(tmp_path, edit, message):
    pr = synthetic_curve(0.5)
    edit(pr)
    path = tmp_path / "pr_curve.json"
    path.write_text(json.dumps(pr))
    with pytest.raises(UserError, match=f"pr_curve.json: {message}"):
        read_pr_curve(path)


def test_comparison_needs_the_iou_panels(tmp_path):
    pr = synthetic_curve(0.5)
    pr["iou_thresholds"] = [0.3 + 0.01 * t for t in range(10)]
    with pytest.raises(UserError, match="odd: no precision list for IoU 0.50"):
        plot_pr_curves({"odd": pr}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_table_layout():
    metrics = {"bbox": {"AP": 0.5, "AP50": None}, "per_class_AP": {"cat": 0.25, "dog": None},
               "num_images": 2, "num_detections": 7}
    lines = format_metrics(metrics).splitlines()
    assert lines[0] == "COCO box metrics (%): 2 images, 7 detections"
    assert lines[1].split() == ["AP", "AP50"]
    assert lines[2].split() == ["50.0", "n/a"]
    assert lines[4].split() == ["cat", "25.0", "dog", "n/a"]
