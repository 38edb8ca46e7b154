"""evaluate_detections against a direct pycocotools run and hand-computed cases."""
import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from sadpipe.errors import UserError
from sadpipe.evaluation import STAT_NAMES, evaluate_detections
from sadpipe.evaluation.report import format_metrics
from tests.sadpipe.evaluation.conftest import (
    CAT,
    DOG,
    FALSE_POSITIVE,
    GT_BOXES,
    perfect_detections,
    tiny_gt,
    write_json,
)


def jittered_detections(seed=0) -> list:
    """Every GT box moved by up to ±15% of its size, plus random false positives."""
    rng = np.random.default_rng(seed)
    dets = []
    for image_id, cat, (x, y, w, h) in GT_BOXES.values():
        for _ in range(3):
            dx, dy, dw, dh = rng.uniform(-0.15, 0.15, size=4) * [w, h, w, h]
            dets.append({"image_id": image_id, "category_id": cat,
                         "bbox": [x + dx, y + dy, w + dw, h + dh], "score": rng.uniform()})
    for image_id in (10, 20, 35):
        for cat in (CAT, DOG):
            x, y = rng.uniform(0, 30, size=2)
            w, h = rng.uniform(5, 40, size=2)
            dets.append({"image_id": image_id, "category_id": cat,
                         "bbox": [x, y, w, h], "score": rng.uniform()})
    return dets


def reference_cocoeval(gt_path, results_path) -> COCOeval:
    """Straight pycocotools, the way its README does it."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        coco_eval = COCOeval(gt, gt.loadRes(str(results_path)), iouType="bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


def test_metrics_match_pycocotools(tmp_path, gt_path):
    results = write_json(tmp_path / "dets.json", jittered_detections())
    metrics = evaluate_detections(gt_path, results, tmp_path / "out", quiet=True)
    ref = reference_cocoeval(gt_path, results)

    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written == metrics
    assert list(metrics["bbox"]) == list(STAT_NAMES)
    np.testing.assert_allclose([metrics["bbox"][n] for n in STAT_NAMES], ref.stats,
                               rtol=0, atol=1e-12)
    assert 0.05 < metrics["bbox"]["AP"] < 0.95  # a non-trivial case
    precision = ref.eval["precision"][:, :, :, 0, 2]  # area all, maxDets 100
    names = {CAT: "cat", DOG: "dog"}
    for k, cat in enumerate(ref.params.catIds):
        assert metrics["per_class_AP"][names[cat]] == pytest.approx(
            precision[:, :, k].mean(), abs=1e-12)
    assert metrics["num_images"] == 3
    assert metrics["num_detections"] == len(jittered_detections())


def test_perfect_detections_score_one(tmp_path, gt_path):
    metrics = evaluate_detections(gt_path, perfect_detections(), tmp_path, quiet=True)
    # pycocotools' precision is tp / (tp + fp + eps), hence the tolerance.
    assert metrics["bbox"] == pytest.approx({name: 1.0 for name in STAT_NAMES}, abs=1e-12)
    assert metrics["per_class_AP"] == pytest.approx({"cat": 1.0, "dog": 1.0}, abs=1e-12)


def test_false_positive_ranked_first(tmp_path, gt_path):
    # cat: FP(0.95), TP, TP -> precision 0, 1/2, 2/3 at recall 0, 1/2, 1; interpolated
    # precision is 2/3 at every recall point, so AP(cat) = 2/3 at every IoU; dog = 1.
    dets = perfect_detections(score=0.8) + [FALSE_POSITIVE]
    metrics = evaluate_detections(gt_path, dets, tmp_path, quiet=True)
    bbox = metrics["bbox"]
    for name in ("AP", "AP50", "AP75"):
        assert bbox[name] == pytest.approx(5 / 6, abs=1e-12)
    assert metrics["per_class_AP"]["cat"] == pytest.approx(2 / 3, abs=1e-12)
    assert metrics["per_class_AP"]["dog"] == pytest.approx(1.0, abs=1e-12)
    # small range: only the small cat GT counts; the small FP ranks above it -> AP 1/2.
    assert bbox["APs"] == pytest.approx(0.5, abs=1e-12)
    # medium range: the FP is small, unmatched, so ignored -> AP 1.
    assert bbox["APm"] == pytest.approx(1.0, abs=1e-12)
    # one detection per image and class: the FP hides the cat of image 20 -> (1/2 + 1) / 2.
    assert bbox["AR1"] == pytest.approx(0.75, abs=1e-12)
    assert bbox["AR100"] == 1.0

    pr = json.loads((tmp_path / "pr_curve.json").read_text())
    assert pr["iou_thresholds"] == pytest.approx(np.linspace(0.5, 0.95, 10))
    assert pr["recall"] == pytest.approx(np.linspace(0, 1, 101))
    assert len(pr["precision"]) == 10
    for curve in pr["precision"]:
        assert curve == pytest.approx([5 / 6] * 101, abs=1e-12)


def test_pr_curve_integrates_to_ap(tmp_path, gt_path):
    metrics = evaluate_detections(gt_path, jittered_detections(seed=3), tmp_path, quiet=True)
    pr = json.loads((tmp_path / "pr_curve.json").read_text())
    precision = np.array(pr["precision"])
    assert precision.shape == (10, 101)
    assert precision.mean() == pytest.approx(metrics["bbox"]["AP"], abs=1e-12)
    assert precision[0].mean() == pytest.approx(metrics["bbox"]["AP50"], abs=1e-12)
    assert precision[5].mean() == pytest.approx(metrics["bbox"]["AP75"], abs=1e-12)
    assert (tmp_path / "pr_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_zero_detections_give_zero(tmp_path, gt_path):
    metrics = evaluate_detections(gt_path, [], tmp_path, quiet=True)
    assert metrics["bbox"] == {name: 0.0 for name in STAT_NAMES}
    assert metrics["per_class_AP"] == {"cat": 0.0, "dog": 0.0}
    assert metrics["num_detections"] == 0
    pr = json.loads((tmp_path / "pr_curve.json").read_text())
    assert np.array(pr["precision"]).max() == 0.0


def test_undefined_metrics_are_null(tmp_path):
    gt = tiny_gt()  # keep only the medium boxes: no small, no large ground truth
    gt["annotations"] = [a for a in gt["annotations"] if a["id"] in (3, 4)]
    gt_path = write_json(tmp_path / "gt.json", gt)
    dets = [d for d in perfect_detections() if d["image_id"] in (20, 35)]
    metrics = evaluate_detections(gt_path, dets, tmp_path / "out", quiet=True)
    bbox = metrics["bbox"]
    assert bbox["APs"] is None and bbox["APl"] is None
    assert bbox["ARs"] is None and bbox["ARl"] is None
    assert bbox["AP"] == pytest.approx(1.0, abs=1e-12)
    assert bbox["APm"] == pytest.approx(1.0, abs=1e-12)
    assert "n/a" in format_metrics(metrics)


def test_class_without_ground_truth_is_null(tmp_path):
    gt = tiny_gt()
    gt["annotations"] = [a for a in gt["annotations"] if a["category_id"] == CAT]
    gt_path = write_json(tmp_path / "gt.json", gt)
    metrics = evaluate_detections(gt_path, perfect_detections(), tmp_path, quiet=True)
    assert metrics["per_class_AP"]["dog"] is None
    assert metrics["per_class_AP"]["cat"] == pytest.approx(1.0, abs=1e-12)


def test_input_list_is_not_modified(tmp_path, gt_path):
    dets = perfect_detections()
    before = json.dumps(dets)
    evaluate_detections(gt_path, dets, tmp_path, quiet=True)
    assert json.dumps(dets) == before


def test_table_in_percent(tmp_path, gt_path, capsys):
    evaluate_detections(gt_path, perfect_detections(score=0.8) + [FALSE_POSITIVE], tmp_path)
    out = capsys.readouterr().out
    assert "3 images, 5 detections" in out
    assert "83.3" in out  # AP = 5/6
    assert "66.7" in out  # cat
    assert "loading annotations" not in out  # pycocotools' chatter is swallowed


@pytest.mark.parametrize("dets, message", [
    ([{"image_id": 99, "category_id": CAT, "bbox": [0, 0, 1, 1], "score": 0.5}],
     "[0].image_id 99 is not an image of"),
    ([{"image_id": 10, "category_id": 4, "bbox": [0, 0, 1, 1], "score": 0.5}],
     "[0].category_id 4 is not a category of"),
    ([{"image_id": 10, "category_id": CAT, "bbox": [0, 0, 1], "score": 0.5}],
     "[0].bbox must be"),
    ([{"image_id": 10, "category_id": CAT, "bbox": [0, 0, 1, 1]}], "[0].score is missing"),
    (["oops"], "[0] must be an object"),
])
def test_bad_detections_in_memory(tmp_path, gt_path, dets, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        evaluate_detections(gt_path, dets, tmp_path / "out", quiet=True, source="model")
    assert not (tmp_path / "out").exists()


def test_ground_truth_without_boxes_is_refused(tmp_path):
    gt = tiny_gt()
    gt["annotations"] = []
    gt_path = write_json(tmp_path / "gt.json", gt)
    with pytest.raises(UserError, match="gt.json: no .* boxes"):
        evaluate_detections(gt_path, [], tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists()
