"""The typed config sections: one field per config key (DEFAULTS is the one list of keys and
defaults), built from a loaded config, with the release's LR schedule."""
from dataclasses import fields

import pytest

from sadpipe.config import DEFAULTS, load_config
from sadpipe.engine.schedule import learning_rate
from sadpipe.engine.settings import DistillSettings, LossSettings, SolverSettings, TrainSettings

SECTIONS = {"solver": SolverSettings, "loss": LossSettings, "distill": DistillSettings,
            "train": TrainSettings}


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_fields_are_the_config_keys(section):
    assert [f.name for f in fields(SECTIONS[section])] == list(DEFAULTS[section])


def test_built_from_a_config_with_overrides():
    cfg = load_config(None, ("solver.steps=[10, 20]", "distill.pattern=[\"pseudo\"]",
                             "loss.focal_gamma=1.0", "train.seed=7"))
    solver, distill = SolverSettings.from_config(cfg), DistillSettings.from_config(cfg)
    assert solver.steps == (10, 20) and distill.pattern == ("pseudo",)
    assert LossSettings.from_config(cfg).focal_gamma == 1.0
    assert TrainSettings.from_config(cfg).seed == 7
    assert distill.normalizer_power == DEFAULTS["distill"]["normalizer_power"]
    with pytest.raises(AttributeError):   # frozen: built once, read everywhere
        solver.base_lr = 1.0


def test_learning_rate_is_the_release_schedule():
    cfg = load_config(None, ("solver.warmup_iters=4", "solver.steps=[6, 8]", "solver.base_lr=0.1"))
    solver = SolverSettings.from_config(cfg)
    for iteration in range(10):
        assert solver.learning_rate(iteration) == learning_rate(
            iteration, base_lr=0.1, warmup_iters=4, warmup_factor=1 / 3, steps=[6, 8], gamma=0.1)
    assert solver.learning_rate(0) == pytest.approx(0.1 / 3)
    assert solver.learning_rate(9) == pytest.approx(0.001)
