"""The shipped pipelines load, and their settings are those of the paper's release (README:
conventions of the release)."""
from pathlib import Path

import pytest

from sadpipe import zoo
from sadpipe.config import load_config
from sadpipe.pipeline import find_pipeline, load_pipeline, shipped_pipelines
from sadpipe.pipeline.shipped import SHIPPED_DIR

REPO_PIPELINES = Path(__file__).resolve().parents[3] / "pipelines"
# The release's settings (README: conventions of the release): per pipeline (teacher arch,
# student arch, short side, max side).
PAPER = {
    "coco_r50_from_r101": ("resnet101", "resnet50", 600, 1000),
    "coco_r101_from_x101": ("resnext101_64x4d", "resnet101", 500, 833),
}
TOY_ORDER = ["data", "teacher", "student", "pseudo_label", "cache_labeled", "cache_pseudo",
             "student_sad", "eval_teacher", "eval_student", "eval_student_sad"]
TRAIN_STAGES = ("teacher", "student", "student_sad")


def train_config(stage) -> dict:
    """The config a train stage resolves to: its --config file plus its --set items."""
    args = list(stage.args)
    overrides = tuple(args[i + 1] for i, a in enumerate(args) if a == "--set"
                      and not args[i + 1].startswith("data.train_"))
    return load_config(args[args.index("--config") + 1], overrides)


def arg(stage, flag: str) -> str:
    return stage.args[stage.args.index(flag) + 1]


def test_shipped_pipelines_are_found_in_the_package():
    assert set(shipped_pipelines()) == {"toy_sad", "custom_sad", "custom_sad_gpu", "toy_zoo", "toy_paper",
                                        *PAPER}
    assert SHIPPED_DIR.resolve() == REPO_PIPELINES.resolve()  # sadpipe/pipelines -> ../pipelines
    assert find_pipeline("toy_sad") == SHIPPED_DIR / "toy_sad.toml"
    assert find_pipeline("coco_r50_from_r101.toml") == SHIPPED_DIR / "coco_r50_from_r101.toml"


@pytest.mark.parametrize("name", sorted(PAPER))
def test_coco_pipelines_follow_the_paper(name, tmp_path):
    teacher_arch, student_arch, short, longest = PAPER[name]
    pipeline = load_pipeline(find_pipeline(name), workdir=tmp_path / "w")
    assert [s.name for s in pipeline.stages] == TOY_ORDER
    data = pipeline.stages[0]
    assert data.given and data.outputs["train_images"].name == "train2017"
    assert data.outputs["val_annotations"].name == "instances_val2017.json"
    assert data.outputs["unlabeled_annotations"].name == "image_info_unlabeled2017.json"
    archs = {"teacher": teacher_arch, "student": student_arch, "student_sad": student_arch}
    for stage_name in TRAIN_STAGES:
        stage = pipeline.stage(stage_name)
        cfg = train_config(stage)
        solver = cfg["solver"]
        assert stage.nproc == 8 and solver["images_per_batch"] == 8 * 2
        assert cfg["model"]["arch"] == archs[stage_name]
        assert (solver["base_lr"], solver["momentum"], solver["weight_decay"]) == (0.01, 0.9, 1e-4)
        assert (solver["warmup_iters"], solver["warmup_factor"]) == (1000, pytest.approx(1 / 3))
        assert solver["max_iter"] == 270000 and solver["steps"] == [180000, 240000]
        assert solver["gamma"] == 0.1
        assert cfg["input"]["flip"] is True
        assert (cfg["input"]["min_size"], cfg["input"]["max_size"]) == (short, longest)
        assert cfg["input"]["train_min_sizes"] == [short]
        assert cfg["loss"] == {"focal_alpha": 0.25, "focal_gamma": 2.0, "smooth_l1_beta": 0.11}
    student_config = arg(pipeline.stage("student"), "--config")
    assert arg(pipeline.stage("student_sad"), "--config") == student_config
    for cache in ("cache_labeled", "cache_pseudo"):
        stage = pipeline.stage(cache)
        assert stage.nproc == 8 and arg(stage, "--views") == "orig,hflip"
        assert arg(stage, "--student-config") == student_config  # the student's input scale
    assert pipeline.stage("pseudo_label").nproc == 8
    assert arg(pipeline.stage("pseudo_label"), "--score-thresh") == "0.5"


@pytest.mark.parametrize("name", sorted(PAPER))
def test_release_teacher_fits_every_coco_model(name, tmp_path):
    """The release's teacher, imported with `sadpipe import-detectron` and given as
    data.teacher_checkpoint, shares its anchors and classes with every model trained here."""
    from sadpipe.convert.detectron_import import detectron_spec
    from sadpipe.engine.teacher import check_teacher_compatible
    from sadpipe.engine.trainer import model_spec_from_config

    release = detectron_spec(PAPER[name][0])
    categories = [{"id": c, "name": n} for c, n in release.categories]
    pipeline = load_pipeline(find_pipeline(name), workdir=tmp_path / "w")
    for stage_name in TRAIN_STAGES:
        spec = model_spec_from_config(train_config(pipeline.stage(stage_name)), categories)
        check_teacher_compatible(release, spec, source=stage_name)


@pytest.mark.parametrize("name", ["toy_sad", "custom_sad", "custom_sad_gpu", *sorted(PAPER)])
def test_wiring_between_stages(name, tmp_path):
    pipeline = load_pipeline(find_pipeline(name), workdir=tmp_path / "w")
    data, stage = pipeline.stages[0], pipeline.stage
    teacher = stage("teacher").outputs["model"]
    assert arg(stage("pseudo_label"), "--teacher") == str(teacher)
    assert arg(stage("pseudo_label"), "--images") == str(data.outputs["unlabeled_images"])
    assert arg(stage("pseudo_label"), "--merge-images") == str(data.outputs["train_images"])
    assert arg(stage("cache_labeled"), "--annotations") == str(data.outputs["train_annotations"])
    pseudo_labels = stage("pseudo_label").outputs["labels"]
    assert arg(stage("cache_pseudo"), "--annotations") == str(pseudo_labels)
    assert arg(stage("cache_pseudo"), "--images") == str(data.outputs["images_root"])
    sad = stage("student_sad")
    assert arg(sad, "--teacher-shards") == str(stage("cache_labeled").outputs["shards"])
    assert arg(sad, "--pseudo-shards") == str(stage("cache_pseudo").outputs["shards"])
    for role, model_stage in (("teacher", "teacher"), ("baseline", "student"),
                              ("distilled", "student_sad")):
        evaluate = stage(pipeline.report.models[role].eval_stage)
        assert arg(evaluate, "--checkpoint") == str(stage(model_stage).outputs["model"])
        assert arg(evaluate, "--annotations") == str(data.outputs["val_annotations"])
    assert pipeline.report.caches == ("cache_labeled", "cache_pseudo")
    for s in pipeline.stages[1:]:
        assert s.resume_args == (("--resume",) if s.command == "train" else ())
        assert all(pipeline.workdir in p.parents for p in s.clean)


@pytest.mark.parametrize("name", ["toy_sad", "custom_sad", "custom_sad_gpu", *sorted(PAPER)])
def test_given_teacher_skips_teacher_training(name, tmp_path):
    ckpt = tmp_path / "teacher.pt"
    pipeline = load_pipeline(find_pipeline(name), workdir=tmp_path / "w",
                             overrides=(f"data.teacher_checkpoint={ckpt}",))
    assert pipeline.stage("teacher").given
    assert arg(pipeline.stage("pseudo_label"), "--teacher") == str(ckpt)
    assert arg(pipeline.stage("eval_teacher"), "--checkpoint") == str(ckpt)


def test_toy_pipeline_is_the_embedded_default(tmp_path):
    pipeline = load_pipeline(find_pipeline("toy_sad"), workdir=tmp_path / "w",
                             overrides=("data.seed=5",))
    assert [s.name for s in pipeline.stages] == TOY_ORDER
    assert pipeline.stages[0].command == "toy-data" and "--seed" in pipeline.stages[0].args
    assert arg(pipeline.stages[0], "--seed") == "5"
    configs = {name: Path(arg(pipeline.stage(name), "--config")).name for name in TRAIN_STAGES}
    assert configs == {"teacher": "toy_teacher.toml", "student": "toy_student.toml",
                       "student_sad": "toy_student_sad.toml"}
    for name in TRAIN_STAGES:
        assert "train.seed=5" in pipeline.stage(name).args
    for stage in pipeline.stages:
        assert stage.nproc == 1
    for name in ("student", "student_sad"):  # the students' configs keep their schedule
        cfg = train_config(pipeline.stage(name))
        lead = load_config(REPO_PIPELINES / f"toy_{name}.toml")
        assert cfg["solver"] == lead["solver"] and cfg["model"]["pretrained"] is True
    # the teacher is the zoo's by default; training it here is one setting away
    assert pipeline.stage("teacher").given
    assert pipeline.stage("teacher").outputs["model"] == zoo.teacher_path()
    trained = load_pipeline(find_pipeline("toy_sad"), workdir=tmp_path / "w",
                            overrides=('data.teacher_checkpoint=""',))
    assert not trained.stage("teacher").given
    assert train_config(trained.stage("teacher"))["model"]["pretrained"] is True


def toy_solver(name: str) -> dict:
    return load_config(REPO_PIPELINES / f"toy_{name}.toml")["solver"]


def test_custom_pipeline_is_the_embedded_chain_on_coco_paths(tmp_path):
    """custom_sad: toy_sad's stages, commands and train configs, on COCO-format paths under
    data.root; seed, iterations, LR steps and pretrained bodies reach every training run."""
    root = tmp_path / "mine"
    toy = load_pipeline(find_pipeline("toy_sad"), workdir=tmp_path / "t")
    custom = load_pipeline(find_pipeline("custom_sad"), workdir=tmp_path / "w", overrides=(
        f"data.root={root}", "data.val_annotations=labels/val.json", "vars.seed=5",
        "vars.teacher_iters=30", "vars.teacher_steps=[20, 25]", "vars.student_iters=40",
        "vars.distill_steps=[9]", "vars.pretrained=true"))
    assert [(s.name, s.command) for s in custom.stages[1:]] == \
           [(s.name, s.command) for s in toy.stages[1:]]
    data = custom.stages[0]
    assert data.given and data.outputs["val_annotations"] == root / "labels" / "val.json"
    assert data.outputs["train_images"] == root / "images" / "train"
    assert data.outputs["unlabeled_annotations"] == root / "annotations" / "unlabeled.json"
    assert data.outputs["images_root"] == root / "images"
    for name in TRAIN_STAGES:
        assert arg(custom.stage(name), "--config") == arg(toy.stage(name), "--config")
    solvers = {name: train_config(custom.stage(name)) for name in TRAIN_STAGES}
    assert [(c["solver"]["max_iter"], c["solver"]["steps"]) for c in solvers.values()] == \
           [(30, [20, 25]), (40, toy_solver("student")["steps"]),
            (toy_solver("student_sad")["max_iter"], [9])]
    assert all(c["train"]["seed"] == 5 and c["model"]["pretrained"] is True
               for c in solvers.values())

    default = load_pipeline(find_pipeline("custom_sad"), workdir=tmp_path / "w")
    for name in TRAIN_STAGES:   # defaults: toy_sad's schedule, the zoo's pretrained bodies
        cfg, lead = train_config(default.stage(name)), train_config(toy.stage(name))
        assert cfg["solver"] == lead["solver"] and cfg["model"] == lead["model"]
        assert cfg["model"]["pretrained"] is True and cfg["train"]["seed"] == 0
    assert not default.stage("teacher").given  # your data: no zoo teacher for its classes


def test_toy_paper_follows_the_papers_protocol(tmp_path):
    """toy_paper: the students train on the zoo teacher's labeled set for the teacher's
    schedule (the baseline its iterations; the distilled ones, alternating with at least as
    many unlabeled images, see the labeled set as many epochs, LR steps at the same points),
    and the cached and live-teacher students differ only in where the teacher's scores come
    from."""
    paper = load_pipeline(find_pipeline("toy_paper"), workdir=tmp_path / "p")
    zoo_run = load_pipeline(find_pipeline("toy_zoo"), workdir=tmp_path / "z")
    data, zoo_data = paper.stages[0], zoo_run.stages[0]
    assert arg(data, "--seed") == arg(zoo_data, "--seed") == "0"
    assert arg(data, "--num-train") == arg(zoo_data, "--num-train") == "8000"
    assert int(arg(data, "--num-unlabeled")) >= int(arg(data, "--num-train"))
    teacher = train_config(zoo_run.stage("teacher"))["solver"]
    teacher_loss = train_config(zoo_run.stage("teacher"))["loss"]
    assert paper.stage("teacher").given and paper.stage("teacher").outputs["model"] == zoo.teacher_path()
    configs = {}
    for name in ("student", "student_sad", "student_sad_live"):
        stage = paper.stage(name)
        cfg = configs[name] = train_config(stage)
        assert cfg["model"]["arch"] == "toy_student_mid"
        assert arg(stage, "--set") == "model.pretrained=false"
        assert f"model.body_weights={paper.stage('pretrain_student_body').outputs['body']}" in stage.args
        pattern = cfg["distill"]["pattern"] if name != "student" else ["labeled"]
        labeled_share = pattern.count("labeled") / len(pattern)
        solver = cfg["solver"]
        assert solver["max_iter"] * labeled_share == teacher["max_iter"]
        assert [step * labeled_share for step in solver["steps"]] == teacher["steps"]
        for key in ("warmup_iters", "base_lr", "images_per_batch"):
            assert solver[key] == teacher[key], key
        assert cfg["loss"] == teacher_loss        # trained like the teacher
    live_data = configs["student_sad_live"].pop("data")   # the live teacher reads COCO files
    assert live_data["pseudo_annotations"] == str(paper.stage("pseudo_label").outputs["labels"])
    configs["student_sad"].pop("data")
    assert configs["student_sad"] == configs["student_sad_live"]
    assert configs["student_sad"]["distill"]["pattern"] == ["labeled", "pseudo"]
    live = paper.stage("student_sad_live").args
    assert arg(paper.stage("student_sad_live"), "--teacher") == str(zoo.teacher_path())
    assert "--teacher-shards" not in live and "--pseudo-shards" not in live
    for cache in ("cache_labeled", "cache_pseudo"):
        assert arg(paper.stage(cache), "--student-config") == arg(paper.stage("student_sad"), "--config")
    assert set(paper.report.models) == {"teacher", "baseline", "distilled", "distilled_live"}
    assert paper.report.paper["distilled"] == 36.5


def test_toy_paper_takes_the_shipped_students_as_given(tmp_path):
    """By default toy_paper trains its body and students; vars naming the zoo files make
    those stages given, and the stages after them read the given files."""
    stages = ("pretrain_student_body", "student", "student_sad")
    paper = load_pipeline(find_pipeline("toy_paper"), workdir=tmp_path / "p")
    assert not any(paper.stage(name).given for name in stages)
    files = {"student_body": "toy_student_mid_body.pt", "student": "toy_student_baseline.pt",
             "student_sad": "toy_student_sad.pt"}
    given = load_pipeline(find_pipeline("toy_paper"), workdir=tmp_path / "g", overrides=tuple(
        f"vars.{var}=${{zoo_dir}}/{file}" for var, file in files.items()))
    assert all(given.stage(name).given for name in stages)
    assert given.stage("pretrain_student_body").outputs["body"] == zoo.body_path("toy_student_mid")
    assert arg(given.stage("eval_student"), "--checkpoint") == str(zoo.ZOO_DIR / files["student"])
    assert arg(given.stage("eval_student_sad"), "--checkpoint") == str(zoo.ZOO_DIR / files["student_sad"])
    live = given.stage("student_sad_live")
    assert not live.given and f"model.body_weights={zoo.body_path('toy_student_mid')}" in live.args
