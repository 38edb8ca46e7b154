"""Pipeline files: references, resolution, and one-line errors naming the file and the key."""
import os
import sys
from pathlib import Path

import pytest

from sadpipe.errors import UserError
from sadpipe.pipeline.references import BadReference, substitute
from sadpipe.pipeline.spec import load_pipeline
from tests.sadpipe.pipeline.conftest import PIPELINE, dedent, write_tiny_pipeline

# ---- references

def test_substitute_hand_cases():
    values = {"workdir": "/w", "data.seed": "3", "teacher.model": "/w/t.pt"}
    assert substitute("${workdir}/x", values) == "/w/x"
    assert substitute("train.seed=${data.seed}", values) == "train.seed=3"
    assert substitute("${teacher.model}:${data.seed}", values) == "/w/t.pt:3"
    assert substitute("cost $$5 ${data.seed}", values) == "cost $5 3"
    assert substitute("$${workdir}", values) == "${workdir}"   # escaped, not expanded
    assert substitute("no refs", values) == "no refs"
    assert substitute("${x}", {"x": "${workdir}"}) == "${workdir}"  # values are not re-expanded


@pytest.mark.parametrize("text, message", [
    ("${nope}", "unknown reference ${nope}"),
    ("a $b", "stray '$'"),
    ("${unclosed", "stray '$'"),
    ("${a..b}", "stray '$'"),
])
def test_substitute_errors(text, message):
    with pytest.raises(BadReference, match=message.replace("$", r"\$").replace("{", r"\{")):
        substitute(text, {"workdir": "/w"})


# ---- resolution

def test_tiny_pipeline_resolves(tmp_path):
    path = write_tiny_pipeline(tmp_path / "p")
    workdir = tmp_path / "work"
    pipeline = load_pipeline(path, workdir=workdir, overrides=("vars.iters=7", "data.num_val=2"))
    assert [s.name for s in pipeline.stages] == ["data", "train", "eval"]
    data, train, evaluate = pipeline.stages
    assert data.command_line() == ["toy-data", str(workdir / "data"), "--seed", "0",
                                   "--num-train", "6", "--num-unlabeled", "0", "--num-val", "2"]
    assert data.outputs["train_images"] == workdir / "data" / "images" / "train"
    assert data.outputs["images_root"] == workdir / "data" / "images"
    assert train.args[-1] == "solver.max_iter=7"
    assert f"data.train_images={workdir}/data/images/train" in train.args
    assert train.inputs[0] == tmp_path / "p" / "tiny_train.toml"
    assert train.resume_args == ("--resume",) and train.clean == (workdir / "train",)
    assert evaluate.args[:2] == ("--checkpoint", str(workdir / "train" / "model_final.pt"))
    assert evaluate.outputs == {"metrics": workdir / "eval" / "metrics.json",
                                "pr_curve": workdir / "eval" / "pr_curve.json"}


def test_list_vars_are_substituted_as_toml(tmp_path):
    """A [vars] list reaches a train stage's --set as TOML, and --set replaces it whole."""
    text = PIPELINE.replace("EXTRA_TRAIN_ARGS", ', "--set", "solver.steps=${vars.steps}"').replace(
        "iters = 4", 'iters = 4\nsteps = [2, 3]')
    path = tmp_path / "p.toml"
    path.write_text(text)
    train = load_pipeline(path, workdir=tmp_path / "w").stage("train")
    assert train.args[-1] == "solver.steps=[2, 3]"
    changed = load_pipeline(path, workdir=tmp_path / "w", overrides=("vars.steps=[70, 90]",))
    assert changed.stage("train").args[-1] == "solver.steps=[70, 90]"
    with pytest.raises(UserError, match=r"--set: config key 'vars\.steps' expects list"):
        load_pipeline(path, workdir=tmp_path / "w", overrides=("vars.steps=70",))


def test_default_workdir_and_relative_paths(tmp_path, monkeypatch):
    write_tiny_pipeline(tmp_path / "p")
    monkeypatch.chdir(tmp_path)
    pipeline = load_pipeline(Path("p/pipeline.toml"))
    assert pipeline.workdir == tmp_path / "work" / "tiny"
    assert pipeline.stage("train").inputs[0] == tmp_path / "p" / "tiny_train.toml"


def test_argv_uses_torchrun_for_several_processes(tmp_path):
    text = PIPELINE.replace("EXTRA_TRAIN_ARGS", "").replace(
        'name = "train"\n', 'name = "train"\nnproc = "${vars.procs}"\n').replace(
        "iters = 4", "iters = 4\nprocs = 3")
    path = tmp_path / "p.toml"
    path.write_text(text)
    train = load_pipeline(path, workdir=tmp_path / "w").stage("train")
    assert train.nproc == 3
    assert train.argv()[:6] == [sys.executable, "-m", "torch.distributed.run", "--standalone",
                               "--nproc_per_node=3", "-m"]
    assert train.argv(resume=True)[6:9] == ["sadpipe.cli", "train", "--config"]
    assert train.argv(resume=True)[-1] == "--resume"
    single = load_pipeline(path, workdir=tmp_path / "w", overrides=("vars.procs=1",))
    assert single.stage("train").argv()[:4] == [sys.executable, "-m", "sadpipe.cli", "train"]


def test_given_outputs_replace_the_stage(tmp_path):
    text = PIPELINE.replace("EXTRA_TRAIN_ARGS", "").replace(
        'clean = ["${workdir}/train"]', 'clean = ["${workdir}/train"]\n'
        'given = { model = "${data.teacher_checkpoint}" }')
    path = tmp_path / "p.toml"
    path.write_text(text)
    plain = load_pipeline(path, workdir=tmp_path / "w")
    assert not plain.stage("train").given
    given = load_pipeline(path, workdir=tmp_path / "w",
                          overrides=("data.teacher_checkpoint=ckpt/t.pt",))
    expected = Path(os.path.abspath("ckpt/t.pt"))
    assert given.stage("train").given and given.stage("train").outputs == {"model": expected}
    assert given.stage("eval").args[1] == str(expected)


def test_zoo_dir_names_the_model_zoo(tmp_path):
    """${zoo_dir} in data.teacher_checkpoint (and in stage strings) is the zoo's folder; any
    other reference there is a one-line error."""
    from sadpipe import zoo

    text = PIPELINE.replace("EXTRA_TRAIN_ARGS", "").replace(
        'clean = ["${workdir}/train"]', 'clean = ["${workdir}/train"]\n'
        'given = { model = "${data.teacher_checkpoint}" }')
    path = tmp_path / "p.toml"
    path.write_text(text)
    given = load_pipeline(path, workdir=tmp_path / "w",
                          overrides=('data.teacher_checkpoint="${zoo_dir}/toy_teacher.pt"',))
    assert given.stage("train").outputs == {"model": zoo.ZOO_DIR / "toy_teacher.pt"}
    with pytest.raises(UserError, match=r"data.teacher_checkpoint: unknown reference \$\{workdir\}"):
        load_pipeline(path, workdir=tmp_path / "w",
                      overrides=('data.teacher_checkpoint="${workdir}/t.pt"',))


def test_coco_data_paths_relative_to_root(tmp_path):
    path = tmp_path / "coco.toml"
    path.write_text(dedent(f"""
        [data]
        source = "coco"
        root = "{tmp_path}/coco"
        train_annotations = "annotations/instances_train2017.json"
        train_images = "train2017"
        val_annotations = "/elsewhere/val.json"
        val_images = "val2017"
        unlabeled_annotations = "annotations/image_info_unlabeled2017.json"
        unlabeled_images = "unlabeled2017"
    """))
    data = load_pipeline(path, workdir=tmp_path / "w").stages[0]
    assert data.given and data.command is None
    assert data.outputs["train_images"] == tmp_path / "coco" / "train2017"
    assert data.outputs["val_annotations"] == Path("/elsewhere/val.json")
    assert data.outputs["images_root"] == tmp_path / "coco"


# ---- errors: one line, the file and the key

def _stage(extra: str) -> str:
    return PIPELINE.replace("EXTRA_TRAIN_ARGS", "").replace(
        'clean = ["${workdir}/train"]', 'clean = ["${workdir}/train"]\n' + extra)


BROKEN = [
    (PIPELINE.replace("[pipeline]", "[pipelines]"), "pipelines: unknown section"),
    (PIPELINE.replace('source = "toy"', 'source = "s3"'), "data.source: must be one of"),
    (PIPELINE.replace("num_val = 4", "num_val = 4\nnum_test = 1"), "data.num_test: unknown key"),
    (PIPELINE.replace("num_val = 4", "num_val = -1"), "data.num_val: must be an integer >= 0"),
    (_stage("retries = 2"), "stages[0].retries (stage 'train'): unknown key"),
    (_stage("nproc = 0"), "stages[0].nproc (stage 'train'): must be an integer >= 1"),
    (_stage('given = { model = "x", other = "y" }'), "stages[0].given (stage 'train'): must name"),
    (PIPELINE.replace('command = "train"', 'command = "fit"'),
     "stages[0].command (stage 'train'): must be a sadpipe command"),
    (PIPELINE.replace('command = "train"', 'command = "run"'),
     "stages[0].command (stage 'train'): must be a sadpipe command"),
    (PIPELINE.replace('name = "eval"', 'name = "train"'), "stages[1].name: 'train' is used twice"),
    (PIPELINE.replace('name = "eval"', 'name = "data"'), "stages[1].name: 'data' is the data"),
    (PIPELINE.replace('name = "eval"', 'name = "Eval"'), "stages[1].name: must be lower-case"),
    (PIPELINE.replace('"--out", "${workdir}/train"', '"--out", "${eval.metrics}"'),
     "stages[0].args (stage 'train'): ${eval.metrics} refers to stage 'eval', which runs later"),
    (PIPELINE.replace("${train.model}", "${train.weights}"),
     "stages[1].args (stage 'eval'): ${train.weights}: stage 'train' has no output"),
    (PIPELINE.replace("${data.val_images}", "${data.test_images}", 1),
     "stages[1].args (stage 'eval'): ${data.test_images}: no such key in [data]"),
    (PIPELINE.replace("${vars.iters}", "${vars.iter}"),
     "stages[0].args (stage 'train'): ${vars.iter}: no such key in [vars]"),
    (PIPELINE.replace('clean = ["${workdir}/train"]', 'clean = ["${workdir}"]'),
     "stages[0].clean (stage 'train'): "),
    (PIPELINE.replace('clean = ["${workdir}/train"]', 'clean = ["/tmp"]'),
     "is not inside the workdir"),
    (PIPELINE.replace('outputs = { model = "${workdir}/train/model_final.pt" }', ""),
     "stages[0].outputs (stage 'train'): must be a non-empty table"),
    (PIPELINE.replace("[report]\n", "[report]\ncaches = [\"train\"]\n"),
     "report.caches: stage 'train' needs the output 'manifest'"),
    (PIPELINE.replace('eval = "eval" }\ndistilled', 'eval = "train" }\ndistilled'),
     "report.baseline.eval: stage 'train' needs the output 'metrics'"),
    (PIPELINE.replace('distilled = { model = "tiny C", eval = "eval" }', ""),
     "report.distilled: must be"),
    (PIPELINE.replace("iters = 4", "iters = 4\nsizes = { a = 1 }"),
     "vars.sizes: must be a string, number or boolean, or a list of them"),
    (PIPELINE.replace("iters = 4", "iters = 4\nsteps = [[1], [2]]"),
     "vars.steps: must be a string, number or boolean, or a list of them"),
    (PIPELINE.replace('model = "tiny B"', 'model = "tiny ${vars.arch}"'),
     "report.baseline.model: unknown reference ${vars.arch}"),
    ("x = [", "not valid TOML"),
]


def test_report_model_names_take_references(tmp_path):
    path = write_tiny_pipeline(tmp_path / "p")
    path.write_text(path.read_text().replace('model = "tiny B"', 'model = "tiny ${vars.iters} iterations"'))
    pipeline = load_pipeline(path, workdir=tmp_path / "w", overrides=("vars.iters=7",))
    assert pipeline.report.models["baseline"].model == "tiny 7 iterations"
    assert pipeline.report.models["teacher"].model == "tiny A"


@pytest.mark.parametrize("text, message", BROKEN)
def test_bad_pipeline_is_a_one_line_error(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text.replace("EXTRA_TRAIN_ARGS", ""))
    with pytest.raises(UserError) as info:
        load_pipeline(path, workdir=tmp_path / "w")
    text = info.value.message
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


@pytest.mark.parametrize("override, message", [
    ("vars.iters=many", "--set: config key 'vars.iters' expects int"),
    ("vars.nothing=1", "--set: unknown config key 'vars.nothing'"),
    ("data.source=coco", "--set: unknown config key 'data.source'"),
    ("solver.max_iter=3", "--set solver.max_iter=3: expected data.KEY=VALUE or vars.KEY=VALUE"),
    ("vars.iters", "expected data.KEY=VALUE"),
])
def test_bad_override_is_a_one_line_error(tmp_path, override, message):
    path = write_tiny_pipeline(tmp_path / "p")
    with pytest.raises(UserError, match=message.replace(".", r"\.")):
        load_pipeline(path, workdir=tmp_path / "w", overrides=(override,))


def test_missing_pipeline_file(tmp_path):
    with pytest.raises(UserError, match="pipeline file not found"):
        load_pipeline(tmp_path / "none.toml")
