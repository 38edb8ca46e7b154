"""The toy model zoo: each shipped file's provenance matches the shipped pipeline and configs
that remake it, and each trained model re-evaluated on the embedded val gives its recorded AP."""
import functools
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
SAD_GAIN_TARGET = 0.02    # toy_paper: SAD student >= baseline + 2.0 AP
SAD_TEACHER_MARGIN = 0.01  # toy_paper: SAD student >= teacher - 1.0 AP


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


# The zoo's trained models: (file, the pipeline and stage that train it, the body it starts from)
RELEASES = {
    "toy_teacher.pt": (ZOO_PIPELINE, "teacher", "toy_teacher"),
    "toy_student_baseline.pt": (PAPER_PIPELINE, "student", "toy_student_mid"),
    "toy_student_sad.pt": (PAPER_PIPELINE, "student_sad", "toy_student_mid"),
}
PATH_SETTINGS = ("data.train_annotations", "data.train_images", "model.body_weights")


@functools.cache
def _release(name: str) -> dict:
    return load_checkpoint(zoo.ZOO_DIR / name)


@pytest.fixture(scope="module")
def teacher():
    return _release(zoo.TEACHER_FILE)


def _ap(release: dict) -> float:
    return release["provenance"]["eval"]["metrics"]["AP"]


@pytest.mark.parametrize("name", RELEASES)
def test_release_provenance_matches_its_pipeline(name, pipelines):
    pipeline_name, stage_name, body_arch = RELEASES[name]
    pipeline, release = pipelines[pipeline_name], _release(name)
    options = _options(pipeline.stage(stage_name))
    fixed = [item for item in options["--set"] if item.split("=")[0] not in PATH_SETTINGS]
    expected = load_config(options["--config"], tuple(fixed))
    config = release["config"]
    for section, values in expected.items():
        for key, value in values.items():
            if f"{section}.{key}" not in PATH_SETTINGS:  # a key added since holds its default there
                assert config[section].get(key, DEFAULTS[section][key]) == value, f"{section}.{key}"

    provenance = release["provenance"]
    assert shlex.split(provenance["command"])[1] == "train"
    assert provenance["iterations"] == expected["solver"]["max_iter"]
    body = provenance["started_from"]["body_weights"]
    assert body["sha256"] == file_sha256(zoo.body_path(body_arch))
    data = pipeline.stage("data").args
    seed, num_train, num_val = (int(data[data.index(flag) + 1])
                                for flag in ("--seed", "--num-train", "--num-val"))
    labeled = provenance["data"]["labeled"]
    if "--teacher-shards" in options:     # distilled from the cache: its manifest, not the images
        assert set(provenance["data"]) == {"labeled", "pseudo"}
        assert all(len(source["manifest_sha256"]) == 64 for source in provenance["data"].values())
    else:
        generator = labeled["generator"]
        assert generator["generator_version"] == toy.GENERATOR_VERSION
        assert generator["seed"] == seed and generator["num_images"]["train"] == num_train
    evaluated = provenance["eval"]["dataset"]["generator"]
    assert evaluated["seed"] == seed and evaluated["num_images"]["val"] == num_val
    assert provenance["wall_time_s"] > 0 and "training" not in release


def test_teacher_reaches_the_papers_teacher_level(teacher):
    assert _ap(teacher) >= TEACHER_AP_TARGET


def test_sad_student_gains_on_its_baseline():
    """The toy paper protocol's first target: SAD adds at least 2 AP to the same student
    trained alone (the paper: +2.2 for R-50)."""
    assert _ap(_release("toy_student_sad.pt")) >= _ap(_release("toy_student_baseline.pt")) + SAD_GAIN_TARGET


def test_sad_student_reaches_its_teacher(teacher):
    """The second target: the distilled student within 1 AP of its teacher (the paper's
    R-50 passes its R-101 teacher by 0.5)."""
    assert _ap(_release("toy_student_sad.pt")) >= _ap(teacher) - SAD_TEACHER_MARGIN


@pytest.fixture(scope="module")
def embedded_val(teacher, tmp_path_factory) -> dict:
    """The embedded val split the zoo's models were measured on (images depend only on seed
    and index, so the other splits need not be generated)."""
    generator = teacher["provenance"]["eval"]["dataset"]["generator"]
    return toy.generate_toy_dataset(tmp_path_factory.mktemp("val") / "data", seed=generator["seed"],
                                    num_train=0, num_unlabeled=0,
                                    num_val=generator["num_images"]["val"], workers=2)["splits"]["val"]


@pytest.mark.parametrize("name", RELEASES)
def test_release_reevaluated_on_the_embedded_val_gives_its_recorded_ap(name, embedded_val):
    from sadpipe.data.coco import CocoDataset, read_coco_json
    from sadpipe.engine.inference import detect_dataset
    from sadpipe.evaluation.coco_eval import run_cocoeval

    release = _release(name)
    generator = release["provenance"]["eval"]["dataset"]["generator"]
    teachers = _release(zoo.TEACHER_FILE)["provenance"]["eval"]["dataset"]["generator"]
    for key in ("generator_version", "seed"):
        assert generator[key] == teachers[key]
    assert generator["num_images"]["val"] == teachers["num_images"]["val"]   # the same val images
    annotations, images = embedded_val["annotation_file"], embedded_val["image_dir"]
    detections = detect_dataset(zoo.ZOO_DIR / name, CocoDataset(annotations, images), progress=False)
    ap = run_cocoeval(read_coco_json(annotations), detections).stats[0]
    assert ap == pytest.approx(_ap(release), abs=AP_TOLERANCE)
