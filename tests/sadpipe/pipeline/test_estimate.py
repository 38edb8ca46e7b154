"""The demo's time estimate: work counted from the stage command lines, priced per stage kind,
scaled by this machine's speed; finished stages cost nothing."""
import json

import pytest

from sadpipe.pipeline import estimate, find_pipeline, load_pipeline
from sadpipe.pipeline.estimate import REFERENCE_SECONDS, STAGE_START_S, estimate_seconds
from sadpipe.pipeline.state import FORMAT


def test_work_per_stage_is_counted_from_the_pipeline(tmp_path):
    pipeline = load_pipeline(find_pipeline("toy_sad"), workdir=tmp_path / "w", overrides=(
        "data.num_train=40", "data.num_unlabeled=60", "data.num_val=10",
        "vars.student_iters=5", "vars.distill_iters=7"))
    got = {e.name: e.seconds for e in estimate_seconds(pipeline, speed=2.0)}
    units = {"data": (("toy-data", None), 110), "student": (("train", "toy_student"), 5 * 8),
             "pseudo_label": (("pseudo-label", None), 60), "cache_labeled": (("cache-logits", None), 80),
             "cache_pseudo": (("cache-logits", None), 200),
             "student_sad": (("train", "toy_student+distill"), 7 * 8),
             "eval_teacher": (("eval", None), 10), "eval_student": (("eval", None), 10),
             "eval_student_sad": (("eval", None), 10)}
    assert set(got) == set(units)  # the zoo's teacher is given: not estimated
    for name, (key, count) in units.items():
        assert got[name] == pytest.approx(2.0 * (STAGE_START_S + count * REFERENCE_SECONDS[key]))


def test_done_stages_cost_nothing(tmp_path):
    pipeline = load_pipeline(find_pipeline("toy_sad"), workdir=tmp_path / "w")
    data = pipeline.stages[0]
    for path in data.outputs.values():  # the data stage's outputs in place, state says done
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch() if path.suffix else path.mkdir(exist_ok=True)
    (tmp_path / "w" / "state.json").write_text(json.dumps(
        {"format": FORMAT, "file_digests": {},
         "stages": {"data": {"status": "done"}}}))
    names = [e.name for e in estimate_seconds(pipeline, speed=1.0)]
    assert "data" not in names and "student" in names


def test_calibration_measures_this_machine():
    assert 0 < estimate.calibration_seconds() < 600
    lines = estimate.format_estimate([estimate.StageEstimate("a", 90.0),
                                      estimate.StageEstimate("b", 30.0)])
    assert lines == "estimate: about 2 min for 2 stages on this machine (longest: a, 1.5 min)"


def test_evaluations_while_training_are_priced_as_eval(tmp_path):
    """vars.eval_period = 2 on 5 iterations: the val set after iterations 2, 4 and 5."""
    counts = ("data.num_train=40", "data.num_unlabeled=60", "data.num_val=10", "vars.student_iters=5")
    plain = load_pipeline(find_pipeline("toy_sad"), workdir=tmp_path / "a", overrides=counts)
    watched = load_pipeline(find_pipeline("toy_sad"), workdir=tmp_path / "b",
                            overrides=(*counts, "vars.eval_period=2"))
    before = {e.name: e.seconds for e in estimate_seconds(plain, speed=2.0)}
    after = {e.name: e.seconds for e in estimate_seconds(watched, speed=2.0)}
    eval_price = REFERENCE_SECONDS[("eval", None)]
    assert after["student"] - before["student"] == pytest.approx(2.0 * 3 * 10 * eval_price)
    assert {k: v for k, v in after.items() if k not in ("student", "student_sad")} == \
        {k: v for k, v in before.items() if k not in ("student", "student_sad")}
