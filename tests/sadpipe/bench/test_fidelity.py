"""The fidelity benchmark's statistics and its --batch-check on a tiny demo-shaped folder."""
import json
import re
import shutil

import pytest
from click.testing import CliRunner

from sadpipe.bench import fidelity
from sadpipe.cli import cli
from tests.sadpipe.conftest import write_tiny_coco
from tests.sadpipe.engine.test_cache_logits import make_teacher


def test_paired_summary_is_the_t_interval_of_the_mean():
    # diffs 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.303: half width 4.303 / sqrt(3) = 2.484
    line = fidelity.paired_summary("cached - online", [1.0, 2.0, 3.0])
    assert line == ("paired difference cached - online: mean +2.00 AP, 95 % interval "
                    "[-0.48, +4.48], sd 1.00 over 3 seeds")
    assert "no interval" in fidelity.paired_summary("x", [0.5])


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A folder laid out like `sadpipe demo`'s: data, pseudo-labels, both caches and a
    distilled student trained for 2 iterations from them."""
    root = tmp_path_factory.mktemp("demo")
    ann, images = write_tiny_coco(root / "src", num_images=4, seed=5)
    (root / "data/annotations").mkdir(parents=True)
    shutil.copytree(images, root / "data/images/train")
    shutil.copytree(images, root / "data/images/val")
    for name in ("train", "val"):
        shutil.copy(ann, root / f"data/annotations/{name}.json")
    data = json.loads(ann.read_text())
    for im in data["images"]:
        im["file_name"] = f"train/{im['file_name']}"
    (root / "pseudo").mkdir()
    (root / "pseudo/pseudo.json").write_text(json.dumps(data))
    config = root / "student.toml"
    config.write_text("[model]\narch = \"toy_student\"\nanchor_size_factor = 1.0\n"
                      "[input]\ntrain_min_sizes = [64]\nmax_size = 128\n"
                      "[solver]\nimages_per_batch = 2\nmax_iter = 2\nwarmup_iters = 1\n"
                      "steps = []\n[train]\ndevice = \"cpu\"\n")
    teacher = make_teacher(root / "teacher.pt")
    runner = CliRunner()
    for name, (a, i) in {"labeled": (root / "data/annotations/train.json", root / "data/images/train"),
                         "pseudo": (root / "pseudo/pseudo.json", root / "data/images")}.items():
        result = runner.invoke(cli, [str(x) for x in (
            "cache-logits", "--teacher", teacher, "--annotations", a, "--images", i,
            "--out", root / "cache" / name, "--student-config", config, "--device", "cpu",
            "--shard-size", 2)])
        assert result.exit_code == 0, result.output
    result = runner.invoke(cli, [str(x) for x in (
        "train", "--config", config, "--out", root / "student_sad",
        "--teacher-shards", root / "cache/labeled", "--pseudo-shards", root / "cache/pseudo",
        "--set", f"data.train_annotations=\"{root / 'data/annotations/train.json'}\"",
        "--set", f"data.train_images=\"{root / 'data/images/train'}\"")])
    assert result.exit_code == 0, result.output
    return root


@pytest.mark.numerics
def test_batch_check_compares_cached_and_live_targets(demo):
    result = CliRunner().invoke(fidelity.main, ["--workdir", str(demo), "--batch-check", "4",
                                                "--teacher", str(demo / "teacher.pt")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    batches = [line for line in lines if line.startswith("  batch ")]
    assert len(batches) == 4
    assert "(labeled, " in batches[0] and "(pseudo, " in batches[1]  # the student's alternation
    found = re.fullmatch(r"batches=4 min_cosine=([0-9.]+) max_rel_adl_error=([0-9.]+)", lines[-1])
    assert found, lines[-1]
    assert float(found[1]) >= 0.999 and float(found[2]) <= 0.02   # the codec's precision
