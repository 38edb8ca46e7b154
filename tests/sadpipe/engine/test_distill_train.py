"""`sadpipe train` with Semi-supervised Adaptive Distillation on tiny data, teacher scores
cached by the real `sadpipe cache-logits`: the labeled/pseudo alternation, refusals of
shards or teachers that do not fit the student, NaN scores, DDP (gloo, 2 processes) against
one process, and resume after SIGKILL in both shard streams."""
import hashlib
import io
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import shards
from sadpipe.checkpoint import save_checkpoint
from sadpipe.commands.cache_logits import command as cache_command
from sadpipe.commands.train import command as train_command
from sadpipe.data.categories import class_order
from sadpipe.data.transforms import Preprocessing
from sadpipe.modeling.anchors import AnchorLayout
from sadpipe.modeling.spec import ModelSpec
from shards.codec import pack_payload, unpack_payload
from shards.sample import digest, dumps_json, npy_bytes
from tests.sadpipe.conftest import (
    CATEGORIES,
    kill_when_written,
    tiny_train_overrides,
    with_categories_reversed,
    write_tiny_coco,
)
from tests.sadpipe.engine.test_cache_logits import make_teacher

REPO = Path(__file__).resolve().parents[3]
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1",
                  "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
SET_SIZE = 4          # images per shard set: the global batch of the DDP test
SHARD_SIZE = 2        # two shards per set: one per process (DDP) or per loader worker
VIEWS = ("orig", "hflip")
OTHER_CATEGORIES = [{"id": 3, "name": "square"}, {"id": 7, "name": "disc"}]
EXACT = 1e-12         # relative: a logged normaliser is a sum of two cached ones
# K processes vs one sum the same terms in another order, and float32 rounding differs with
# the CPU's vector width; 3 SGD steps amplify it (measured, worst tensor: 3e-3 of its update
# with AVX2 kernels, ~1e-6 after one step). The maths themselves (global normalisers) are
# checked in float32-independent terms by tests/sadpipe/engine/test_distributed_losses.py,
# where per-process normalisers change the gradient by ~100 %.
UPDATE_RTOL = 2e-2


# ------------------------------------------------------------------------------ fixtures


def _cache(teacher, ann, images, out, student_config):
    result = CliRunner().invoke(cache_command, [
        "--teacher", str(teacher), "--annotations", str(ann), "--images", str(images),
        "--out", str(out), "--student-config", str(student_config), "--device", "cpu",
        "--shard-size", str(SHARD_SIZE)])
    assert result.exit_code == 0, result.output
    return out


def _with_categories(ann, categories):
    """Rewrite a COCO file's category ids (same names, same boxes)."""
    data = json.loads(ann.read_text())
    new_id = {old["id"]: new["id"] for old, new in zip(data["categories"], categories)}
    data["categories"] = categories
    for a in data["annotations"]:
        a["category_id"] = new_id[a["category_id"]]
    ann.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def sad(tmp_path_factory):
    """A labeled set (96×64 images) and a pseudo-labeled set (64×80) of 4 images, each
    cached in 2 shards; a third set whose teacher has other category ids."""
    root = tmp_path_factory.mktemp("sad")
    student_config = root / "student.toml"
    student_config.write_text("[input]\ntrain_min_sizes = [64]\nmax_size = 128\n")
    teacher = make_teacher(root / "teacher.pt")
    ann, images = write_tiny_coco(root / "labeled", num_images=SET_SIZE, seed=0)
    pseudo_ann, pseudo_images = write_tiny_coco(root / "pseudo", num_images=SET_SIZE, seed=1,
                                                size=(64, 80))
    other_ann, other_images = write_tiny_coco(root / "other", num_images=2, seed=2)
    _with_categories(other_ann, OTHER_CATEGORIES)
    other_teacher = make_teacher(root / "other_teacher.pt", categories=OTHER_CATEGORIES)
    return {
        "teacher": teacher, "ann": ann, "images": images,
        "labeled": _cache(teacher, ann, images, root / "shards_labeled", student_config),
        "pseudo": _cache(teacher, pseudo_ann, pseudo_images, root / "shards_pseudo", student_config),
        "other": _cache(other_teacher, other_ann, other_images, root / "shards_other", student_config),
    }


# ------------------------------------------------------------------------------ helpers


def _train_args(sad, out, *extra, **overrides):
    args = ["--config", "/dev/null", "--out", str(out)]
    for item in tiny_train_overrides(sad["ann"], sad["images"], **overrides):
        args += ["--set", item]
    return args + [str(x) for x in extra]


def _train(sad, out, *extra, **overrides):
    return CliRunner().invoke(train_command, _train_args(sad, out, *extra, **overrides))


def _popen(args, *, launcher=("-m", "sadpipe.cli")):
    return subprocess.Popen([sys.executable, *launcher, "train", *args], cwd=REPO, env=SUBPROCESS_ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc, timeout=300):
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode()[-3000:]


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def _view_normalizers(shard_dir) -> dict:
    """{sample key: {view: Σq^θ}} read back with the shards reader (manifest order)."""
    pipeline = shards.shard_pipeline(shard_dir, shuffle=False, nodesplitter=None, workersplitter=None)
    return {s["key"]: {v: s["views"][v]["normalizer"] for v in VIEWS} for s in pipeline}


def _batch_normalizers(shard_dir, batch_size) -> list[float]:
    """Every Σq^θ a batch of distinct samples of the set can have, any view of each."""
    per_key = _view_normalizers(shard_dir).values()
    return [sum(n[v] for n, v in zip(keys, views))
            for keys in itertools.combinations(per_key, batch_size)
            for views in itertools.product(VIEWS, repeat=batch_size)]


def _is_one_of(value, candidates, rel):
    return any(math.isclose(value, c, rel_tol=rel) for c in candidates)


def _rewrite_sample(shard_dir, key, edit) -> str:
    """Edit one sample's members in place (``edit(members)``, members: suffix -> bytes),
    recompute its checksum, and make the progress entry and the manifest describe the new
    tar. Returns the shard's name."""
    for tar_path in sorted(shard_dir.glob("rank*.tar")):
        with tarfile.open(tar_path) as tar:
            members = [(info, tar.extractfile(info).read()) for info in tar.getmembers()]
        ours = {info.name.split(".", 1)[1]: data for info, data in members
                if info.name.split(".", 1)[0] == key}
        if not ours:
            continue
        edit(ours)
        ours["sha256.json"] = dumps_json({"sha256": digest(ours)}, key)
        with tarfile.open(tar_path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for info, data in members:
                if info.name.split(".", 1)[0] == key:
                    data = ours[info.name.split(".", 1)[1]]
                    info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        entry_path = shard_dir / "progress" / tar_path.name.replace(".tar", ".json")
        entry = json.loads(entry_path.read_text())
        entry.update(bytes=tar_path.stat().st_size,
                     sha256=hashlib.sha256(tar_path.read_bytes()).hexdigest())
        entry_path.write_text(json.dumps(entry))
        shards.merge_manifests(shard_dir, 1, command="edited by test_distill_train")
        return tar_path.name
    raise AssertionError(f"{key} is in no shard of {shard_dir}")


def _nan_scores(members):
    """Every view's stand-in parameters NaN (a broken writer: checksums stay valid)."""
    meta = json.loads(members["json"])
    scores = np.lib.format.read_array(io.BytesIO(members["scores.npy"])).tobytes()
    packed = []
    for view in meta["views"]:
        start, length = view["payload"]
        payload = unpack_payload(scores[start:start + length])
        payload["fill"] = payload["fill"].copy()
        payload["fill"][0, 0, 0] = np.nan
        packed.append(pack_payload(payload))
        view["payload"] = [sum(map(len, packed[:-1])), len(packed[-1])]
    members["scores.npy"] = npy_bytes(np.frombuffer(b"".join(packed), np.uint8))
    members["json"] = json.dumps(meta, sort_keys=True).encode()


def _infinite_normalizer(members):
    meta = json.loads(members["json"])
    for view in meta["views"]:
        view["normalizer"] = math.inf
    members["json"] = json.dumps(meta, sort_keys=True).encode()  # "Infinity": JSON readers take it


def _one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


# ------------------------------------------------------------------------------ alternation


@pytest.mark.parametrize("streams, pattern, expected", [
    (("labeled", "pseudo"), ["labeled", "pseudo", "pseudo"], ["labeled", "pseudo", "pseudo"] * 2),
    (("labeled",), ["labeled", "pseudo", "pseudo"], ["labeled"] * 3),
    (("pseudo",), ["labeled", "pseudo"], ["pseudo"] * 3),
])
def test_batches_alternate_as_the_pattern_says(sad, tmp_path, streams, pattern, expected):
    flags = {"labeled": "--teacher-shards", "pseudo": "--pseudo-shards"}
    extra = [x for name in streams for x in (flags[name], sad[name])]
    out = tmp_path / "run"
    result = _train(sad, out, *extra, **{"solver.max_iter": len(expected),
                                         "distill.pattern": json.dumps(pattern)})
    assert result.exit_code == 0, result.output
    records = _metrics(out)
    assert [r["source"] for r in records] == expected
    # each step's batch really came from its set: its ADL normaliser is the sum of the
    # cached normalisers of two samples of that set (and of no pair of the other set)
    possible = {name: _batch_normalizers(sad[name], 2) for name in ("labeled", "pseudo")}
    for r in records:
        other = "pseudo" if r["source"] == "labeled" else "labeled"
        assert _is_one_of(r["adl_normalizer"], possible[r["source"]], EXACT), r
        assert not _is_one_of(r["adl_normalizer"], possible[other], 1e-6), r
        assert r["loss"] == pytest.approx(r["loss_cls"] + r["loss_box"] + r["loss_adl"], rel=1e-5)
        assert r["loss_adl"] > 0 and 0 < r["mean_adw"] < 1 and 0 <= r["data_fraction"] <= 1


@pytest.mark.numerics
def test_live_teacher_scores_match_the_cache(sad, tmp_path):
    """Online mode (--teacher) runs the same teacher on the same views as cache-logits: each
    step's normaliser is a sum of cached ones, up to float32 batching differences."""
    out = tmp_path / "online"
    result = _train(sad, out, "--teacher", sad["teacher"], **{"solver.max_iter": 2})
    assert result.exit_code == 0, result.output
    possible = _batch_normalizers(sad["labeled"], 2)
    for r in _metrics(out):
        assert r["source"] == "labeled" and r["loss_adl"] > 0
        assert _is_one_of(r["adl_normalizer"], possible, 1e-5), r


@pytest.mark.numerics
def test_live_teacher_rescores_the_cached_batches(sad, tmp_path):
    """--teacher with shards: the cache's batches (same images and labels: the same detection
    losses at the first step, the teacher's loading leaving the student's init alone), scored
    by the live teacher on each view's own grid as cache-logits scored them, so every
    normaliser equals the cached one of that batch and the ADL differs by the codec only."""
    runs = {}
    for name, extra in (("cached", ()), ("live", ("--teacher", sad["teacher"]))):
        out = tmp_path / name
        result = _train(sad, out, "--teacher-shards", sad["labeled"], "--pseudo-shards", sad["pseudo"],
                        *extra, **{"solver.max_iter": 4, "train.log_period": 1})
        assert result.exit_code == 0, result.output
        runs[name] = _metrics(out)
    assert [r["source"] for r in runs["live"]] == ["labeled", "pseudo"] * 2
    for cached, live in zip(runs["cached"], runs["live"], strict=True):
        assert live["source"] == cached["source"]
        assert live["adl_normalizer"] == pytest.approx(cached["adl_normalizer"], rel=1e-5)
    first_cached, first_live = runs["cached"][0], runs["live"][0]
    assert first_live["loss_cls"] == first_cached["loss_cls"]
    assert first_live["loss_box"] == first_cached["loss_box"]
    assert first_live["loss_adl"] == pytest.approx(first_cached["loss_adl"], rel=0.05)


def test_rescoring_refuses_a_teacher_the_cache_was_not_made_with(sad, tmp_path):
    other = tmp_path / "other_teacher.pt"
    make_teacher(other, seed=1)
    out = tmp_path / "run"
    line = _one_line_error(_train(sad, out, "--teacher-shards", sad["labeled"], "--teacher", other))
    assert f"{other}: not the teacher {sad['labeled']} was cached from" in line
    assert not out.exists()


def test_live_teacher_with_categories_listed_in_another_order(sad, tmp_path):
    """Labels that list the categories in another order distil the same student: the
    teacher's class c and the student's class c are the same category either way."""
    reversed_ann = with_categories_reversed(sad["ann"], tmp_path / "reversed.json")
    for name, ann in (("sorted", sad["ann"]), ("reversed", reversed_ann)):
        result = _train({**sad, "ann": ann}, tmp_path / name, "--teacher", sad["teacher"],
                        **{"solver.max_iter": 2})
        assert result.exit_code == 0, result.output
    a, b = (_weights(tmp_path / name / "model_final.pt") for name in ("sorted", "reversed"))
    assert all(torch.equal(a[key], b[key]) for key in a)


# ------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("override, field, have, want", [
    ("input.train_min_sizes=[80]", "preprocessing.min_size", "64", "80"),
    ("input.mean=[0.5, 0.5, 0.5]", "preprocessing.mean", "[0.485, 0.456, 0.406]", "[0.5, 0.5, 0.5]"),
    ("input.std=[0.5, 0.5, 0.5]", "preprocessing.std", "[0.229, 0.224, 0.225]", "[0.5, 0.5, 0.5]"),
    ("model.anchor_size_factor=2.0", "anchor_layout.size_factor", "1.0", "2.0"),
    ("input.flip=false", "views", '["orig", "hflip"]', '["orig"]'),
])
def test_refuses_shards_made_for_other_settings(sad, tmp_path, override, field, have, want):
    out = tmp_path / "run"
    result = _train(sad, out, "--teacher-shards", sad["labeled"], "--set", override)
    line = _one_line_error(result)
    assert f"{sad['labeled']}: {field}: shards have {have}, training expects {want}" in line
    assert not out.exists()  # refused before the run folder is made


def test_refuses_pseudo_shards_of_other_classes(sad, tmp_path):
    out = tmp_path / "run"
    result = _train(sad, out, "--teacher-shards", sad["labeled"], "--pseudo-shards", sad["other"])
    line = _one_line_error(result)
    assert f"{sad['other']}: categories: shards have " in line
    assert json.dumps(OTHER_CATEGORIES) in line and json.dumps(CATEGORIES) in line
    assert not out.exists()


def test_refuses_live_teacher_with_other_anchors(sad, tmp_path):
    spec = ModelSpec(arch="toy_student", categories=class_order(CATEGORIES),
                     anchor_layout=AnchorLayout(size_factor=2.0),
                     preprocessing=Preprocessing(min_size=64, max_size=128))
    teacher = tmp_path / "teacher_sf2.pt"
    save_checkpoint(teacher, spec, spec.build())
    out = tmp_path / "run"
    line = _one_line_error(_train(sad, out, "--teacher", teacher))
    assert f"{teacher}: teacher anchor layout" in line and "per-anchor distillation" in line
    assert "'size_factor': 2.0" in line and "'size_factor': 1.0" in line
    assert not out.exists()


@pytest.mark.parametrize("edit, message, workers", [
    (_nan_scores, "teacher scores contain NaN/inf", 0),
    (_nan_scores, "teacher scores contain NaN/inf", 1),   # raised in a loader worker
    (_infinite_normalizer, "is inf", 0),
])
def test_non_finite_teacher_scores_name_shard_and_key(sad, tmp_path, edit, message, workers):
    shard_dir = tmp_path / "shards"
    shutil.copytree(sad["labeled"], shard_dir)
    key = sorted(_view_normalizers(shard_dir))[1]
    shard = _rewrite_sample(shard_dir, key, edit)
    out = tmp_path / "run"
    # both batches of the first epoch: every sample is drawn once
    result = _train(sad, out, "--teacher-shards", shard_dir,
                    **{"solver.max_iter": 2, "data.num_workers": workers})
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    lines = result.output.strip().splitlines()   # the first step may log before the bad sample
    assert all(line.startswith("iteration=") for line in lines[:-1]), result.output
    line = lines[-1]
    assert f"shard {shard}, sample {key}: " in line and message in line
    assert not (out / "model_final.pt").exists()


# ------------------------------------------------------------------------------ scale-out


@pytest.mark.numerics
def test_ddp_two_processes_equal_one_process(sad, tmp_path):
    """torchrun K=2 (gloo): each process reads one shard of each set; every step is the
    whole set (global batch = 4), so one process sees the same global batches."""
    overrides = {"solver.images_per_batch": SET_SIZE, "solver.max_iter": 3, "model.norm": "gn"}
    logs = tmp_path / "logs"
    ddp = _popen(_train_args(sad, tmp_path / "ddp", "--teacher-shards", sad["labeled"],
                             "--pseudo-shards", sad["pseudo"], **overrides),
                 launcher=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "--log-dir", str(logs), "--redirects", "3", "-m", "sadpipe.cli"))
    single = _train(sad, tmp_path / "single", "--teacher-shards", sad["labeled"],
                    "--pseudo-shards", sad["pseudo"], **overrides)
    assert single.exit_code == 0, single.output
    _finish(ddp)

    start = _train(sad, tmp_path / "start", "--teacher-shards", sad["labeled"],  # the initial weights
                   "--pseudo-shards", sad["pseudo"], **overrides, **{"solver.base_lr": 0.0})
    assert start.exit_code == 0, start.output
    a, b = _weights(tmp_path / "ddp" / "model_final.pt"), _weights(tmp_path / "single" / "model_final.pt")
    init = _weights(tmp_path / "start" / "model_final.pt")
    assert a.keys() == b.keys() == init.keys()
    worst = 0.0
    for key in a:  # what 3 updates did, equal up to float32 summation order (see UPDATE_RTOL)
        moved_a, moved_b = (a[key] - init[key]).double(), (b[key] - init[key]).double()
        difference = float((moved_a - moved_b).norm())
        assert difference <= UPDATE_RTOL * float(moved_b.norm()), key
        worst = max(worst, difference / max(float(moved_b.norm()), 1e-30))
    print(f"K=2 vs one process: worst tensor differs by {worst:.1e} of its update")
    ddp_metrics, single_metrics = _metrics(tmp_path / "ddp"), _metrics(tmp_path / "single")
    assert [r["iteration"] for r in ddp_metrics] == [1, 2, 3]       # one writer: rank 0
    for r, s in zip(ddp_metrics, single_metrics):  # global normalisers, not rank 0's share
        assert r["source"] == s["source"]
        assert r["adl_normalizer"] == pytest.approx(s["adl_normalizer"], rel=1e-9)
    assert [p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir()] == ["iter_0000002.pt"]
    rank_logs = {int(p.parent.name): p.read_text() for p in logs.rglob("stderr.log")}
    assert sorted(rank_logs) == [0, 1]
    assert rank_logs[0].count("iteration=") == 3 and "wrote" in rank_logs[0]
    assert "iteration=" not in rank_logs[1] and "wrote" not in rank_logs[1]


@pytest.mark.numerics
def test_resume_after_sigkill_continues_both_shard_streams(sad, tmp_path):
    """Batches of 3 from 2 loader workers (2-image shards, one per worker): batches cross
    epochs, and at the checkpoint (iteration 4) both streams stop in the middle of a shard."""
    overrides = {"solver.images_per_batch": 3, "solver.max_iter": 9, "train.checkpoint_period": 4,
                 "data.num_workers": 2, "distill.pattern": '["labeled", "pseudo", "pseudo"]'}

    def args(out, *extra):
        return _train_args(sad, out, "--teacher-shards", sad["labeled"], "--pseudo-shards",
                           sad["pseudo"], *extra, **overrides)

    ref = _popen(args(tmp_path / "ref"))
    out = tmp_path / "killed"
    proc = _popen(args(out))
    kill_when_written(proc, out / "checkpoints" / "iter_0000004.pt")
    assert not (out / "model_final.pt").exists()
    _finish(ref)
    _finish(_popen(args(out, "--resume")))

    a, b = _weights(tmp_path / "ref" / "model_final.pt"), _weights(out / "model_final.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ref_metrics, resumed = _metrics(tmp_path / "ref"), _metrics(out)
    assert [r["iteration"] for r in resumed] == list(range(1, 10))
    for r, s in zip(ref_metrics, resumed):  # the same batch at every step
        assert (r["source"], r["loss"], r["adl_normalizer"]) == (s["source"], s["loss"], s["adl_normalizer"])
