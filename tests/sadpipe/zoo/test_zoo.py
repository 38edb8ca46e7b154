"""The toy model zoo: each shipped file's provenance matches the shipped pipeline and configs
that remake it, and the zoo teacher re-evaluated on the embedded val gives its recorded AP."""
import shlex

import pytest

from sadpipe import zoo
from sadpipe.checkpoint import load_checkpoint
from sadpipe.config import DEFAULTS, load_config
from sadpipe.data import toy, toy_crops
from sadpipe.fileio import file_sha256
from sadpipe.pipeline import find_pipeline, load_pipeline

pytestmark = pytest.mark.numerics  # compares against an independent reference (float tolerances)

ZOO_PIPELINE = "toy_zoo"
PAPER_PIPELINE = "toy_paper"   # the toy paper protocol's student body and students
AP_TOLERANCE = 0.001  # ± 0.1 AP points
TEACHER_AP_TARGET = 0.35  # the paper's teachers: 36.0 and 36.6 COCO AP


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
    return {name: load_pipeline(find_pipeline(name), workdir=tmp_path_factory.mktemp(name))
            for name in (ZOO_PIPELINE, PAPER_PIPELINE)}


@pytest.fixture(scope="module")
def pipeline(pipelines):
    return pipelines[ZOO_PIPELINE]


def _options(stage) -> dict:
    """{--flag: value} of a stage's command line (``--set`` items gathered in a list)."""
    options, args = {"--set": []}, list(stage.args)
    while args:
        flag = args.pop(0)
        if flag == "--set":
            options["--set"].append(args.pop(0))
        elif flag.startswith("--"):
            options[flag] = args.pop(0)
    return options


@pytest.mark.parametrize("arch, pipeline_name, stage_name", [
    ("toy_teacher", ZOO_PIPELINE, "pretrain_teacher_body"),
    ("toy_student", ZOO_PIPELINE, "pretrain_student_body"),
    ("toy_student_mid", PAPER_PIPELINE, "pretrain_student_body"),
])
def test_body_provenance_matches_its_pipeline(arch, pipeline_name, stage_name, pipelines):
    payload = zoo.read_body_file(zoo.body_path(arch))
    stage = pipelines[pipeline_name].stage(stage_name)
    provenance, options = payload["provenance"], _options(stage)
    settings = provenance["settings"]
    assert payload["arch"] == settings["arch"] == options["--arch"] == arch
    assert settings["seed"] == int(options["--seed"])
    assert settings["num_images"] == int(options["--num-images"])
    assert settings["epochs"] == int(options["--epochs"])
    assert provenance["generator_version"] == toy.GENERATOR_VERSION
    assert provenance["split_id"] == toy_crops.PRETRAIN_SPLIT_ID
    assert shlex.split(provenance["command"])[1] == "pretrain"
    assert provenance["num_train_crops"] > 4 * settings["num_images"]
    assert provenance["wall_time_s"] > 0 and 0.0 < provenance["val_accuracy"] <= 1.0


@pytest.fixture(scope="module")
def teacher():
    return load_checkpoint(zoo.teacher_path())


def test_teacher_provenance_matches_the_zoo_pipeline(teacher, pipeline):
    stage = pipeline.stage("teacher")
    options = _options(stage)
    paths = ("data.train_annotations", "data.train_images", "model.body_weights")
    fixed = [item for item in options["--set"] if item.split("=")[0] not in paths]
    expected = load_config(options["--config"], tuple(fixed))
    config = teacher["config"]
    for section, values in expected.items():
        for key, value in values.items():
            if f"{section}.{key}" not in paths:   # a key added since holds its default there
                assert config[section].get(key, DEFAULTS[section][key]) == value, f"{section}.{key}"

    provenance = teacher["provenance"]
    assert provenance["iterations"] == expected["solver"]["max_iter"]
    body = provenance["started_from"]["body_weights"]
    assert body["sha256"] == file_sha256(zoo.body_path("toy_teacher"))
    data = pipeline.stage("data").args
    seed, num_train, num_val = (int(data[data.index(flag) + 1])
                                for flag in ("--seed", "--num-train", "--num-val"))
    generator = provenance["data"]["labeled"]["generator"]
    assert generator["generator_version"] == toy.GENERATOR_VERSION
    assert generator["seed"] == seed and generator["num_images"]["train"] == num_train
    evaluated = provenance["eval"]["dataset"]["generator"]
    assert evaluated["seed"] == seed and evaluated["num_images"]["val"] == num_val
    assert provenance["wall_time_s"] > 0 and "training" not in teacher


def test_teacher_reaches_the_papers_teacher_level(teacher):
    assert teacher["provenance"]["eval"]["metrics"]["AP"] >= TEACHER_AP_TARGET


def test_teacher_reevaluated_on_the_embedded_val_gives_its_recorded_ap(teacher, tmp_path):
    from sadpipe.data.coco import CocoDataset, read_coco_json
    from sadpipe.engine.inference import detect_dataset
    from sadpipe.evaluation.coco_eval import run_cocoeval

    generator = teacher["provenance"]["eval"]["dataset"]["generator"]
    summary = generate_val(tmp_path, generator)
    annotations, images = summary["annotation_file"], summary["image_dir"]
    detections = detect_dataset(zoo.teacher_path(), CocoDataset(annotations, images), progress=False)
    ap = run_cocoeval(read_coco_json(annotations), detections).stats[0]
    assert ap == pytest.approx(teacher["provenance"]["eval"]["metrics"]["AP"], abs=AP_TOLERANCE)


def generate_val(root, generator: dict) -> dict:
    """The embedded val split the teacher was measured on (images depend only on seed and
    index, so the other splits need not be generated)."""
    return toy.generate_toy_dataset(root / "data", seed=generator["seed"], num_train=0,
                                    num_unlabeled=0, num_val=generator["num_images"]["val"],
                                    workers=2)["splits"]["val"]
