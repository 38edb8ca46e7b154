"""Watching a run: train.eval_period puts the val AP into metrics.jsonl every N iterations and
after the last, keeps model_best.pt by val AP, and redraws curves.png; the AP is the one
`sadpipe eval` measures for the same weights."""
import json

import pytest
import torch
from click.testing import CliRunner

from sadpipe.commands.evaluate import command as eval_command
from sadpipe.commands.train import command as train_command
from tests.sadpipe.conftest import assert_one_line_error, make_tiny_checkpoint, tiny_train_overrides

VAL_KEYS = {"iteration", "val_AP", "val_AP50", "val_AP75", "val_APs", "val_APm", "val_APl", "val_seconds"}


def _train(ann, images, out, *extra, **overrides):
    args = ["--config", "/dev/null", "--out", str(out)]
    for item in tiny_train_overrides(ann, images, **overrides) + extra:
        args += ["--set", item]
    return CliRunner().invoke(train_command, args)


def _eval_ap(checkpoint, ann, images, out):
    result = CliRunner().invoke(eval_command, ["--checkpoint", str(checkpoint), "--annotations", str(ann),
                                               "--images", str(images), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    return json.loads((out / "metrics.json").read_text())["bbox"]["AP"]


def test_eval_period_logs_val_ap_and_keeps_the_best(tiny_coco, tmp_path):
    ann, images = tiny_coco
    start = make_tiny_checkpoint(tmp_path / "start.pt", cls_bias=-1.0)   # scores above 0.05
    out = tmp_path / "run"
    result = _train(ann, images, out, f"model.init={json.dumps(str(start))}",
                    f"data.val_annotations={json.dumps(str(ann))}",
                    f"data.val_images={json.dumps(str(images))}",
                    **{"train.eval_period": 4, "solver.max_iter": 6, "train.log_period": 2})
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "val_AP" in r]
    assert [r["iteration"] for r in evals] == [4, 6]          # every 4 iterations, and after the last
    assert all(set(r) == VAL_KEYS for r in evals)
    assert all(r["val_AP"] is not None and r["val_AP"] > 0 for r in evals)

    best = max(evals, key=lambda r: r["val_AP"])
    payload = torch.load(out / "model_best.pt", weights_only=True)
    assert payload["best"]["iteration"] == best["iteration"]
    assert payload["best"]["val_AP"] == best["val_AP"]
    # the AP sadpipe eval measures for the same weights, on the same set
    assert _eval_ap(out / "model_best.pt", ann, images, tmp_path / "eval_best") == best["val_AP"]
    assert _eval_ap(out / "model_final.pt", ann, images, tmp_path / "eval_final") == evals[-1]["val_AP"]
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_without_eval_period_there_is_no_best_model(tiny_coco, tmp_path):
    ann, images = tiny_coco
    out = tmp_path / "run"
    result = _train(ann, images, out, **{"solver.max_iter": 2})
    assert result.exit_code == 0, result.output
    assert not (out / "model_best.pt").exists()
    assert (out / "curves.png").is_file()          # loss and LR are drawn for every run
    assert not any("val_AP" in line for line in (out / "metrics.jsonl").read_text().splitlines())


def test_eval_period_needs_a_val_set_of_the_same_categories(tiny_coco, tmp_path):
    ann, images = tiny_coco
    result = _train(ann, images, tmp_path / "a", **{"train.eval_period": 2})
    assert_one_line_error(result, "train.eval_period needs data.val_annotations")
    assert not (tmp_path / "a").exists()

    other = json.loads(ann.read_text())
    other["categories"][0]["id"] = 77
    for a in other["annotations"]:
        a["category_id"] = 77 if a["category_id"] == 2 else a["category_id"]
    (tmp_path / "other.json").write_text(json.dumps(other))
    other_val = f"data.val_annotations={json.dumps(str(tmp_path / 'other.json'))}"
    result = _train(ann, images, tmp_path / "b", other_val, f"data.val_images={json.dumps(str(images))}",
                    **{"train.eval_period": 2})
    assert_one_line_error(result, "other.json: data.val_annotations has category ids [5, 77]")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("records, best", [
    ([], None),
    ([{"iteration": 2, "loss": 1.0}, {"iteration": 2, "val_AP": None}], None),
    ([{"iteration": 2, "val_AP": 0.1}, {"iteration": 4, "val_AP": 0.3},
      {"iteration": 6, "val_AP": 0.2}], 0.3),
])
def test_best_so_far_after_a_resume(records, best):
    """A resumed run takes the best val AP of the metrics it kept (truncated at the resumed
    checkpoint), so it rewrites model_best.pt exactly when the uninterrupted run did."""
    from sadpipe.engine.periodic_eval import best_so_far, is_better
    assert best_so_far(records) == best
    assert is_better(0.25, best) == (best is None or best < 0.25)
    assert not is_better(None, best)
