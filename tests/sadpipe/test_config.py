import pytest

from sadpipe.config import DEFAULTS, dump_toml, load_config
from sadpipe.errors import UserError


def test_defaults_are_the_paper_schedule():
    s = DEFAULTS["solver"]
    assert (s["images_per_batch"], s["base_lr"], s["momentum"], s["weight_decay"]) == (16, 0.01, 0.9, 1e-4)
    assert (s["warmup_iters"], s["max_iter"], s["steps"]) == (1000, 270000, [180000, 240000])


def test_file_and_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[solver]\nbase_lr = 0.02\n[model]\narch = "resnet101"\n')
    cfg = load_config(path, ("solver.max_iter=10", "input.train_min_sizes=[500, 600]", "model.init=x.pt"))
    assert cfg["solver"]["base_lr"] == 0.02 and cfg["solver"]["max_iter"] == 10
    assert cfg["input"]["train_min_sizes"] == [500, 600] and cfg["model"]["init"] == "x.pt"
    assert cfg["model"]["arch"] == "resnet101"
    assert load_config(None, ()) == DEFAULTS


def test_round_trip_through_toml(tmp_path):
    cfg = load_config(None, ("solver.max_iter=10",))
    path = tmp_path / "r.toml"
    path.write_text(dump_toml(cfg))
    assert load_config(path) == cfg


@pytest.mark.parametrize("text, message", [
    ("[solver]\nbase_lrr = 0.1\n", "unknown config key 'solver.base_lrr'"),
    ("[solverr]\nbase_lr = 0.1\n", "unknown config section 'solverr'"),
    ("[solver]\nmax_iter = 'ten'\n", "'solver.max_iter' expects int"),
    ("[solver\n", "not valid TOML"),
])
def test_bad_config_files(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        load_config(path)


def test_bad_override():
    with pytest.raises(UserError, match="unknown config key 'solver.nope'"):
        load_config(None, ("solver.nope=1",))
    with pytest.raises(UserError, match="expected key=value"):
        load_config(None, ("solver.max_iter",))
