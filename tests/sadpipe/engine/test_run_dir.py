import pytest

from sadpipe.config import dump_toml, load_config
from sadpipe.engine.run_dir import CONFIG_FILE, RunDir
from sadpipe.errors import UserError

NEWER_KEYS = ("stride_in_1x1", "p6_from", "anchor_convention", "box_convention",
              "channel_order", "pixel_range")


def test_resume_accepts_a_run_written_before_newer_keys(tmp_path):
    """A run started by a version without some config keys resumes: they hold their defaults."""
    cfg = load_config()
    run = RunDir(tmp_path / "run")
    run.prepare(cfg, resume=False)
    older = [line for line in dump_toml(cfg).splitlines() if line.split(" =")[0] not in NEWER_KEYS]
    (tmp_path / "run" / CONFIG_FILE).write_text("\n".join(older) + "\n")
    run.prepare(cfg, resume=True)
    other = load_config(overrides=("model.anchor_convention=detectron",))
    with pytest.raises(UserError, match="different config"):
        run.prepare(other, resume=True)
