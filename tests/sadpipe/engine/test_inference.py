"""Inference and `sadpipe eval --checkpoint` on tiny data with a tiny model."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sadpipe.checkpoint import load_model
from sadpipe.commands.evaluate import command as eval_command
from sadpipe.data.coco import CocoDataset
from sadpipe.engine.inference import Predictor, detect_dataset
from sadpipe.errors import UserError
from tests.sadpipe.conftest import CATEGORIES, make_tiny_checkpoint, with_categories_reversed


def _checkpoint(path, categories=CATEGORIES):
    return make_tiny_checkpoint(path, categories=categories)  # class bias -1: boxes above 0.05


def test_detect_dataset_matches_predictor_in_original_pixels(tiny_coco, tmp_path):
    ann, images = tiny_coco
    ckpt = _checkpoint(tmp_path / "m.pt")
    dataset = CocoDataset(ann, images)
    results = detect_dataset(ckpt, dataset, batch_size=3, progress=False)
    model, spec = load_model(ckpt)
    record = dataset.records[0]
    det = Predictor(model, spec)([np.asarray(dataset.load_image(record))])[0]
    mine = [r for r in results if r["image_id"] == record.image_id]
    assert 0 < len(mine) <= 100 and len(mine) == len(det["scores"])
    # boxes come back in original pixels: within the 96x64 image
    boxes = np.array([r["bbox"] for r in mine])
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= 96 + 1e-3).all()
    assert (boxes[:, 1] + boxes[:, 3] <= 64 + 1e-3).all()
    assert {r["category_id"] for r in results} <= {2, 5}
    # batching does not change the detections of an image padded to the same size
    np.testing.assert_allclose(sorted(r["score"] for r in mine), sorted(det["scores"].tolist()), rtol=1e-5)


def test_eval_checkpoint_writes_detections_and_metrics(tiny_coco, tmp_path):
    ann, images = tiny_coco
    ckpt = _checkpoint(tmp_path / "m.pt")
    out = tmp_path / "eval"
    result = CliRunner().invoke(eval_command, ["--checkpoint", str(ckpt), "--annotations", str(ann),
                                               "--images", str(images), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["bbox"]["AP"] <= 1.0
    assert len(json.loads((out / "detections.json").read_text())) == metrics["num_detections"]
    # the model's own speed: the predictor's time over every image, not the command's
    speed = metrics["inference"]
    assert speed["images"] == metrics["num_images"] == 8 and speed["seconds"] > 0
    assert speed["images_per_s"] == pytest.approx(8 / speed["seconds"], rel=0.01)


def test_eval_does_not_depend_on_category_listing_order(tiny_coco, tmp_path):
    """A checkpoint evaluated on a file that lists the same categories in another order gives
    the same detections (category ids) and metrics."""
    ann, images = tiny_coco
    ckpt = _checkpoint(tmp_path / "m.pt")
    outputs = {}
    for name, path in (("sorted", ann), ("reversed", with_categories_reversed(ann, tmp_path / "r.json"))):
        out = tmp_path / name
        result = CliRunner().invoke(eval_command, ["--checkpoint", str(ckpt), "--annotations",
                                                   str(path), "--images", str(images), "--out",
                                                   str(out), "--quiet"])
        assert result.exit_code == 0, result.output
        outputs[name] = [json.loads((out / f).read_text()) for f in ("detections.json", "metrics.json")]
        del outputs[name][1]["inference"]   # a timing
    assert outputs["sorted"] == outputs["reversed"]
    assert {d["category_id"] for d in outputs["sorted"][0]} == {2, 5}


@pytest.mark.parametrize("case", ["not_sadpipe", "other_classes"])
def test_eval_refuses_wrong_checkpoint(tiny_coco, tmp_path, case):
    ann, images = tiny_coco
    ckpt = tmp_path / "m.pt"
    if case == "not_sadpipe":
        torch.save({"weights": torch.zeros(3)}, ckpt)
        message = "not a sadpipe checkpoint"
    else:
        _checkpoint(ckpt, categories=CATEGORIES + [{"id": 9, "name": "extra"}])
        message = "checkpoint has 3 classes"
    out = tmp_path / "eval"
    result = CliRunner().invoke(eval_command, ["--checkpoint", str(ckpt), "--annotations", str(ann),
                                               "--images", str(images), "--out", str(out)])
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
    assert not (out / "metrics.json").exists() and not (out / "detections.json").exists()


def test_load_model_refuses_garbage(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_model(path)
