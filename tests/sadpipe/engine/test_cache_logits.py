"""`sadpipe cache-logits` on tiny images with a tiny teacher: the cached views are the
student's views (checked against a hand-built view and an independent float64 ADL), stock
webdataset reads the shards, a SIGKILLed run resumes to identical bytes, torchrun with 2
ranks gives the same samples, bad input is a one-line error, and inspect-shards verifies."""
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import webdataset as wds
from click.testing import CliRunner
from PIL import Image

import shards
from sadpipe.checkpoint import load_model
from sadpipe.cli import cli
from sadpipe.data.transforms import Preprocessing, make_recipe
from sadpipe.engine.cache_logits import sample_key
from sadpipe.engine.teacher import Teacher
from shards.codec import pack_payload, unpack_payload
from tests.sadpipe.conftest import (
    CATEGORIES,
    assert_one_line_error,
    kill_when_written,
    make_tiny_checkpoint,
    with_categories_reversed,
    write_tiny_coco,
)
from tests.shards import adl_reference

REPO = Path(__file__).resolve().parents[3]
# subprocesses run in temporary folders: they import this checkout, like the test process
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1",
                  "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                              os.environ.get("PYTHONPATH")]))}
VIEW_FLIPS = {"orig": False, "hflip": True}
MEMBER_EXTS = (".jpg", ".png", ".json", ".npy")
# the student's view settings (differ from the teacher's own 64/128 and normalisation)
STUDENT_MIN, STUDENT_MAX = 80, 160
STUDENT_MEAN, STUDENT_STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
ADL_TOLERANCE, COSINE_TOLERANCE = 0.005, 0.999   # what the codec promises (issue 4)


# ------------------------------------------------------------------------------ fixtures


def make_teacher(path, *, categories=CATEGORIES, seed=0):
    """An untrained toy detector whose class head is scaled so its scores depend on the
    pixels (a flipped view scores differently), with the bias raised so ~8% of the scores
    are above the codec's threshold."""
    return make_tiny_checkpoint(path, categories=categories, seed=seed, conv_gain=8.0,
                                cls_gain=16.0, cls_bias=-7.0)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return make_teacher(tmp_path_factory.mktemp("teacher") / "teacher.pt")


@pytest.fixture(scope="module")
def student_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("student") / "student.toml"
    path.write_text(f"[input]\ntrain_min_sizes = [{STUDENT_MIN}]\nmax_size = {STUDENT_MAX}\n"
                    f"mean = {list(STUDENT_MEAN)}\nstd = {list(STUDENT_STD)}\n")
    return path


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return write_tiny_coco(tmp_path_factory.mktemp("coco"), num_images=5)


@pytest.fixture(scope="module")
def cached(teacher, coco, student_config, tmp_path_factory):
    """Shards of the 5 tiny images at the student's scale (3 shards, 2-image teacher batches)."""
    ann, images = coco
    out = tmp_path_factory.mktemp("cached") / "shards"
    result = run_cli("cache-logits", "--teacher", teacher, "--annotations", ann, "--images",
                     images, "--out", out, "--student-config", student_config,
                     "--shard-size", 2, "--batch-size", 2, "--device", "cpu")
    assert result.exit_code == 0, result.output
    return out


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def cache_args(teacher, ann, images, out, *extra):
    return ["cache-logits", "--teacher", teacher, "--annotations", ann, "--images", images,
            "--out", out, "--device", "cpu", *extra]


def tree_bytes(root):
    """{relative path: bytes} of every file under root."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*"))
            if p.is_file()}


def samples_by_key(shard_dir):
    """{key: {member suffix: bytes}} over all shards, read with tarfile; fails on a key seen
    in two shards."""
    out = {}
    for tar_path in sorted(Path(shard_dir).glob("*.tar")):
        members = defaultdict(dict)
        with tarfile.open(tar_path) as tar:
            for info in tar.getmembers():
                key, suffix = info.name.split(".", 1)
                members[key][suffix] = tar.extractfile(info).read()
        for key, sample in members.items():
            assert key not in out, f"{key} is in two shards"
            out[key] = sample
    return out


# ----------------------------------------------------------- views = the student's views


def student_prep():
    return Preprocessing(min_size=STUDENT_MIN, max_size=STUDENT_MAX, mean=STUDENT_MEAN,
                         std=STUDENT_STD, size_divisibility=128)


def hand_built_probs(model, spec, image, *, flip):
    """Teacher scores (HWA, C) float64 of a view built by hand, not with make_view: flip the
    original pixels first, resize to the student's scale, normalise with the teacher's own
    mean/std, zero-pad to a multiple of 128."""
    h, w = image.shape[:2]
    scale = min(STUDENT_MIN / min(h, w), STUDENT_MAX / max(h, w))
    pixels = np.array(image[:, ::-1] if flip else image)  # a writable copy
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255.0
    x = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bilinear",
                      align_corners=False)
    mean = torch.tensor(spec.preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.preprocessing.std).view(1, 3, 1, 1)
    x = (x - mean) / std
    padded = torch.zeros(1, 3, -(-x.shape[2] // 128) * 128, -(-x.shape[3] // 128) * 128)
    padded[:, :, :x.shape[2], :x.shape[3]] = x
    with torch.no_grad():
        logits, _ = model(padded)
    return torch.sigmoid(logits[0].double()).numpy()


def adl_errors(dense, decoded):
    """{student: (relative ADL error, gradient cosine)} of decoded against dense scores, with
    the independent float64 reference and the normaliser of the dense scores."""
    n = adl_reference.normalizer(dense)
    out = {}
    for name, logits in adl_reference.students(dense, seed=0).items():
        out[name] = adl_reference.errors(adl_reference.adl(dense, logits, n), decoded, logits, n)
    return out


def test_cached_views_are_the_students_views(cached, teacher, coco):
    ann, images = coco
    model, spec = load_model(teacher)
    live = Teacher(teacher)
    manifest = shards.read_manifest(cached)
    assert manifest["header"]["preprocessing"] == student_prep().to_dict()
    assert manifest["header"]["views"] == ["orig", "hflip"]
    threshold = manifest["codec"]["threshold"]
    records = {im["id"]: im for im in json.loads(ann.read_text())["images"]}
    seen = []
    for sample in shards.shard_pipeline(cached, manifest=manifest, shuffle=False):
        image_id = sample["target"]["image_id"]
        seen.append(image_id)
        image = np.asarray(Image.open(images / records[image_id]["file_name"]).convert("RGB"))
        assert sample["image_bytes"] == (images / records[image_id]["file_name"]).read_bytes()
        decoded = {}
        for name, flip in VIEW_FLIPS.items():
            view = sample["views"][name]
            recipe = make_recipe(student_prep(), image.shape[0], image.shape[1], flip=flip)
            assert view["recipe"] == {**recipe, "image_id": image_id}
            dense = hand_built_probs(model, spec, image, flip=flip)
            np.testing.assert_allclose(live.views_probs([image], [recipe], student_prep())[0],
                                       dense, rtol=1e-4, atol=1e-7)
            decoded[name] = shards.decode_view(sample, name).astype(np.float64)
            assert view["normalizer"] == pytest.approx(np.sum(dense ** 1.8), rel=1e-4)
            # entries clearly above the threshold are kept (16-bit logits), the rest stand in
            kept = dense >= threshold * 1.01
            assert 0.01 < kept.mean() < 0.5
            np.testing.assert_allclose(decoded[name][kept], dense[kept], rtol=4e-3)
            assert (decoded[name][dense < threshold * 0.99] <= threshold * 1.0001).all()
            for student, (error, cosine) in adl_errors(dense, decoded[name]).items():
                assert abs(error) <= ADL_TOLERANCE and cosine >= COSINE_TOLERANCE, \
                    (image_id, name, student, error, cosine)
        # the same check tells the views apart: the orig scores fail as hflip scores
        hflip_dense = hand_built_probs(model, spec, image, flip=True)
        assert min(c for _, c in adl_errors(hflip_dense, decoded["orig"]).values()) < 0.99
    assert seen == stored_order(records)  # every image (all have boxes), in shuffled order


def stored_order(image_ids, shuffle_seed=0):
    """The order cache-logits stores images with boxes in: id order, permuted by the seed."""
    ids = sorted(image_ids)
    return [ids[i] for i in np.random.default_rng(shuffle_seed).permutation(len(ids))]


# ------------------------------------------------------------------ stock webdataset


def test_stock_webdataset_reads_the_shards(cached, coco):
    ann, images = coco
    manifest = shards.read_manifest(cached)
    tars = sorted(cached.glob("*.tar"))
    assert [t.name for t in tars] == [s["name"] for s in manifest["shards"]] == \
           ["rank00-000000.tar", "rank00-000001.tar", "rank00-000002.tar"]
    for tar_path in tars:
        with tarfile.open(tar_path) as tar:
            names = tar.getnames()
        assert names and all(n.endswith(MEMBER_EXTS) for n in names), names

    codec = shards.codec_from_params(manifest["codec"])
    by_key = {s["key"]: s for s in shards.shard_pipeline(cached, manifest=manifest,
                                                          shuffle=False)}
    data = json.loads(ann.read_text())
    stock = list(wds.WebDataset([str(t) for t in tars], shardshuffle=False).decode())
    assert [s["__key__"] for s in stock] == [sample_key(i) for i in
                                             stored_order(im["id"] for im in data["images"])]
    for sample in stock:
        meta = sample["json"]
        image = next(im for im in data["images"] if sample_key(im["id"]) == sample["__key__"])
        assert sample["png"] == (images / image["file_name"]).read_bytes()
        assert meta["target"]["file_name"] == image["file_name"]
        boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                  a["bbox"][1] + a["bbox"][3]] for a in data["annotations"]
                 if a["image_id"] == image["id"]]
        np.testing.assert_allclose(meta["target"]["boxes"], boxes)
        for view in meta["views"]:
            start, length = view["payload"]
            payload = unpack_payload(sample["scores.npy"][start:start + length].tobytes())
            np.testing.assert_array_equal(codec.decode(payload),
                                          shards.decode_view(by_key[sample["__key__"]],
                                                             view["name"]))


# ------------------------------------------------------------------ processes, signals


def _cli(*args):
    return [sys.executable, "-m", "sadpipe.cli", *map(str, args)]


@pytest.fixture(scope="module")
def many(tmp_path_factory, teacher):
    """30 images (one unreadable) and an uninterrupted single-process run over them:
    (args without --out, the run's shard folder)."""
    root = tmp_path_factory.mktemp("many")
    ann, images = write_tiny_coco(root / "data", num_images=30, seed=4)
    (images / "0007.png").write_bytes(b"not a png")
    args = cache_args(teacher, ann, images, "out", "--shard-size", 2, "--min-size", 192)
    out = root / "single"
    out.mkdir()
    done = subprocess.run(_cli(*args), cwd=out, capture_output=True, env=SUBPROCESS_ENV)
    assert done.returncode == 0, done.stderr.decode()
    return args, out / "out"


def test_sigkill_then_rerun_ends_identical(many, tmp_path):
    args, single = many
    proc = subprocess.Popen(_cli(*args), cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=SUBPROCESS_ENV)
    kill_when_written(proc, tmp_path / "out" / "rank00-000000.tar")
    written = sorted(p.name for p in (tmp_path / "out").glob("*.tar"))
    assert 1 <= len(written) < 15 and not (tmp_path / "out" / "manifest.json").exists()
    before = {n: (tmp_path / "out" / n).stat() for n in written}

    rerun = subprocess.run(_cli(*args), cwd=tmp_path, capture_output=True, env=SUBPROCESS_ENV)
    assert rerun.returncode == 0, rerun.stderr.decode()
    # every file (shards, manifest with the same command, progress, run.json) is identical
    assert tree_bytes(tmp_path / "out") == tree_bytes(single)
    for name, stat in before.items():   # finished shards were kept, not redone
        after = (tmp_path / "out" / name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    manifest = shards.read_manifest(single)
    assert manifest["totals"]["samples"] == 29 and len(manifest["shards"]) == 15
    assert [s["key"] for s in manifest["skipped"]] == [sample_key(8)]


def test_torchrun_two_ranks_gives_the_same_samples(many, tmp_path):
    args, single = many
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node=2", "-m", "sadpipe.cli", *map(str, args)]
    done = subprocess.run(torchrun, cwd=tmp_path, capture_output=True, env=SUBPROCESS_ENV)
    assert done.returncode == 0, done.stderr.decode()
    out = tmp_path / "out"
    names = sorted(p.name for p in out.glob("*.tar"))
    assert {n[:6] for n in names} == {"rank00", "rank01"}
    assert not list(out.glob(".*"))   # no partial files left
    multi, reference = samples_by_key(out), samples_by_key(single)
    assert sorted(multi) == sorted(reference) and len(reference) == 29
    for key, members in reference.items():
        assert multi[key] == members, key

    manifest, single_manifest = shards.read_manifest(out), shards.read_manifest(single)
    assert manifest["world_size"] == 2 and [s["name"] for s in manifest["shards"]] == names
    assert manifest["header"] == single_manifest["header"]
    assert [s["key"] for s in manifest["skipped"]] == [sample_key(8)]
    for field in ("samples", "views", "skipped", "payload_bytes"):
        assert manifest["totals"][field] == single_manifest["totals"][field], field


# ------------------------------------------------------------------------ bad input


def _not_sadpipe(path):
    torch.save({"weights": torch.zeros(2)}, path)


@pytest.mark.parametrize("make, message", [
    (None, "checkpoint file not found"),
    (_not_sadpipe, "not a sadpipe checkpoint"),
])
def test_bad_teacher_is_one_line_error(coco, tmp_path, make, message):
    ann, images = coco
    ckpt = tmp_path / "teacher.pt"
    if make is not None:
        make(ckpt)
    out = tmp_path / "shards"
    assert_one_line_error(run_cli(*cache_args(ckpt, ann, images, out)), f"{ckpt}: {message}")
    assert not out.exists()


def test_out_of_another_teacher_or_settings_is_refused_unless_overwrite(teacher, coco,
                                                                       tmp_path):
    ann, images = coco
    out = tmp_path / "shards"
    assert run_cli(*cache_args(teacher, ann, images, out, "--shard-size", 3)).exit_code == 0
    first = tree_bytes(out)
    other = make_teacher(tmp_path / "other.pt", seed=1)
    assert_one_line_error(run_cli(*cache_args(other, ann, images, out, "--shard-size", 3)),
                          "run.json: header.teacher.sha256: existing shards have",
                          "overwrite to replace them")
    assert_one_line_error(run_cli(*cache_args(teacher, ann, images, out, "--shard-size", 3,
                                              "--min-size", 72)),
                          "header.preprocessing.min_size: existing shards have 64, this run "
                          "has 72")
    assert tree_bytes(out) == first   # refused runs changed nothing

    result = run_cli(*cache_args(other, ann, images, out, "--shard-size", 3, "--overwrite"))
    assert result.exit_code == 0, result.output
    replaced = shards.read_manifest(out)
    assert replaced["header"]["teacher"]["sha256"] != \
           json.loads(first["manifest.json"])["header"]["teacher"]["sha256"]
    assert sorted(p.name for p in out.glob("*.tar")) == ["rank00-000000.tar", "rank00-000001.tar"]
    assert shards.verify_shards(out).ok
    fresh = tmp_path / "fresh"   # the same as a run of the other teacher into a new folder
    assert run_cli(*cache_args(other, ann, images, fresh, "--shard-size", 3)).exit_code == 0
    assert {k: v for k, v in tree_bytes(out).items() if k.endswith(".tar")} == \
           {k: v for k, v in tree_bytes(fresh).items() if k.endswith(".tar")}


@pytest.mark.parametrize("views, message", [
    ("orig,flip", "--views: unknown view 'flip' (known: orig, hflip)"),
    ("orig,orig", "--views: expected distinct views among orig, hflip, got 'orig,orig'"),
    (",", "--views: expected distinct views"),
])
def test_bad_views_are_one_line_errors(teacher, coco, tmp_path, views, message):
    ann, images = coco
    out = tmp_path / "shards"
    assert_one_line_error(run_cli(*cache_args(teacher, ann, images, out, "--views", views)),
                          message)
    assert not out.exists()


def test_annotations_with_other_categories_are_refused(teacher, coco, tmp_path):
    ann, images = coco
    data = json.loads(ann.read_text())
    data["categories"].append({"id": 9, "name": "extra"})
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    out = tmp_path / "shards"
    assert_one_line_error(run_cli(*cache_args(teacher, other, images, out)),
                          f"{other}: categories", "differ from the teacher's")
    assert not out.exists()


def test_category_listing_order_of_the_annotations_does_not_matter(cached, teacher, coco,
                                                                  student_config, tmp_path):
    """Annotations listing the categories in another order give the same samples (targets
    hold category ids, scores follow the teacher's classes) and the same header, categories
    in class-index order; only the annotations' digest differs."""
    ann, images = coco
    out = tmp_path / "shards"
    result = run_cli(*cache_args(teacher, with_categories_reversed(ann, tmp_path / "r.json"),
                                 images, out, "--student-config", student_config,
                                 "--shard-size", 2, "--batch-size", 2))
    assert result.exit_code == 0, result.output
    assert samples_by_key(out) == samples_by_key(cached)
    header, reference = shards.read_manifest(out)["header"], shards.read_manifest(cached)["header"]
    assert header.pop("annotations_sha256") != reference.pop("annotations_sha256")
    assert header == reference and header["categories"] == CATEGORIES


def test_unreadable_image_is_skipped_and_listed(teacher, tmp_path):
    ann, images = write_tiny_coco(tmp_path / "data", num_images=4, seed=2)
    (images / "0002.png").write_bytes(b"\x89PNG truncated")
    out = tmp_path / "shards"
    result = run_cli(*cache_args(teacher, ann, images, out, "--shard-size", 2))
    assert result.exit_code == 0, result.output
    manifest = shards.read_manifest(out)
    totals = manifest["totals"]
    assert totals["samples"] == 3 and totals["views"] == 6 and totals["payload_bytes"] > 0
    assert f"wrote {out}: 3 images, {totals['payload_bytes_per_view'] / 1024:.1f} KiB per view " \
           f"({totals['compression_vs_fp16']:.1f}x smaller than dense fp16), 1 skipped" \
           in result.output
    position = stored_order(range(1, 5)).index(3)  # 2 images per shard
    assert [(s["key"], s["shard"]) for s in manifest["skipped"]] == \
           [(sample_key(3), f"rank00-{position // 2:06d}.tar")]
    assert "0002.png: cannot decode image" in manifest["skipped"][0]["reason"]
    assert sorted(samples_by_key(out)) == [sample_key(i) for i in (1, 2, 4)]


def test_crowd_regions_travel_in_the_shards(teacher, tmp_path):
    """A crowd annotation is cached as a region of its image and reaches training's targets
    in view pixels (flipped with the view)."""
    from sadpipe.config import load_config
    from sadpipe.engine.distributed import DistInfo
    from sadpipe.engine.shard_stream import shard_stream

    ann, images = write_tiny_coco(tmp_path / "data", num_images=2, seed=4)
    data = json.loads(ann.read_text())
    data["annotations"].append({"id": 99, "image_id": 2, "category_id": 5,
                                "bbox": [40, 8, 50, 40], "iscrowd": 1})
    ann.write_text(json.dumps(data))
    out = tmp_path / "shards"
    assert run_cli(*cache_args(teacher, ann, images, out)).exit_code == 0
    targets = {json.loads(sample["json"])["target"]["image_id"]: json.loads(sample["json"])["target"]
               for sample in samples_by_key(out).values()}
    assert targets[1]["crowd_boxes"] == [] and targets[2]["crowd_boxes"] == [[40, 8, 90, 48]]
    assert 99 not in targets[2]["category_ids"] and len(targets[2]["boxes"]) == \
           sum(a["image_id"] == 2 and not a.get("iscrowd") for a in data["annotations"])

    _, spec = load_model(teacher)   # views at the teacher's own 64 px: the scale is 1
    cfg = load_config(None, ("input.train_min_sizes=[64]", "input.max_size=128",
                             "solver.images_per_batch=2"))
    batch = next(shard_stream(out, spec, cfg, DistInfo(), start_batch=0))
    for image_id, recipe, target in zip(batch["image_ids"], batch["recipes"], batch["targets"]):
        expected = [[96 - 90, 8, 96 - 40, 48]] if recipe["flip"] else [[40, 8, 90, 48]]
        assert target["crowd_boxes"].tolist() == (expected if image_id == 2 else [])


# ------------------------------------------------------------------------ inspect-shards


def test_inspect_shards_verifies_and_reports_a_flipped_byte(cached, tmp_path):
    result = run_cli("inspect-shards", cached, "--verify")
    assert result.exit_code == 0, result.output
    assert "content: 3 shards, 5 images, 10 views, 0 images skipped" in result.output
    assert "verify: OK (3 shards, 5 images, 10 views checked" in result.output

    damaged = tmp_path / "damaged"
    shutil.copytree(cached, damaged)
    shard = damaged / "rank00-000001.tar"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    result = run_cli("inspect-shards", damaged, "--verify")
    assert result.exit_code == 1
    assert "problem: shard rank00-000001.tar: sha256 differs from the manifest" in result.output
    assert "verification failed (1 problem(s) listed above)" in result.output
    assert "Traceback" not in result.output


# ------------------------------------------------------------- codec quality benchmark


def tar_member_bytes(members):
    """Bytes that ``members`` ({name: data}) take inside a tar, counted by tarfile itself."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        return tar.offset


def test_codec_quality_measures_against_the_reference(teacher, coco):
    from sadpipe.bench import codec_quality

    ann, images = coco
    live = Teacher(teacher)
    image = np.asarray(Image.open(images / "0001.png").convert("RGB"))
    recipe = make_recipe(student_prep(), image.shape[0], image.shape[1], flip=True)
    dense = live.views_probs([image], [recipe], student_prep())[0].numpy()
    sizes = live.spec.anchor_layout.level_sizes(tuple(recipe["padded_size"]))
    codec = shards.SparseCodec()
    q = dense.astype(np.float64)
    students = adl_reference.students(q, seed=1)
    result = codec_quality.measure_view(dense, sizes, codec,
                                        {k: torch.from_numpy(v) for k, v in students.items()})

    payload = codec.encode(dense, sizes)
    decoded = {"codec": codec.decode(payload).astype(np.float64),
               "drop-to-0": np.where(dense >= codec.threshold, q, 0.0)}
    n = adl_reference.normalizer(q)
    assert sorted(result.errors) == sorted((s, d) for s in students for d in decoded)
    for student, x in students.items():
        dense_result = adl_reference.adl(q, x, n)
        for name, q_hat in decoded.items():
            error, cosine = adl_reference.errors(dense_result, q_hat, x, n)
            assert result.errors[(student, name)][0] == pytest.approx(error, rel=1e-6, abs=1e-12)
            assert result.errors[(student, name)][1] == pytest.approx(cosine, rel=1e-9)
    assert result.entries == q.size
    packed = pack_payload(payload)
    assert result.payload_bytes == len(packed)
    buf = io.BytesIO()  # one image: its two views' payloads in one scores member
    np.save(buf, np.frombuffer(packed * 2, np.uint8), allow_pickle=False)
    assert result.stored_bytes == tar_member_bytes({"k.scores.npy": buf.getvalue()}) / 2
    bounds = np.cumsum([0, *sizes])
    kept = [float((dense[a:b] >= codec.threshold).mean()) for a, b in zip(bounds, bounds[1:])]
    assert result.kept_fraction == pytest.approx(kept, rel=1e-12)


def test_codec_quality_judges_another_precision_against_fp32(teacher, coco):
    """--compare-precision: the bf16 teacher's scores, dense and through the codec, each with
    the normaliser of its own scores, against the fp32 teacher's dense scores (the reference
    of every row), and how far the scores move; checked with the independent float64 ADL."""
    from sadpipe.bench import codec_quality

    ann, images = coco
    image = np.asarray(Image.open(images / "0001.png").convert("RGB"))
    recipe = make_recipe(student_prep(), image.shape[0], image.shape[1], flip=False)
    dense, other = (Teacher(teacher, precision=p).views_probs([image], [recipe], student_prep())[0].numpy()
                    for p in ("fp32", "bf16"))
    sizes = Teacher(teacher).spec.anchor_layout.level_sizes(tuple(recipe["padded_size"]))
    codec = shards.SparseCodec()
    q, q_other = dense.astype(np.float64), other.astype(np.float64)
    assert not np.array_equal(q, q_other)
    students = adl_reference.students(q, seed=2)
    result = codec_quality.measure_view(dense, sizes, codec,
                                        {k: torch.from_numpy(v) for k, v in students.items()},
                                        other=("bf16", other))
    n, n_other = adl_reference.normalizer(q), adl_reference.normalizer(q_other)
    candidates = {"bf16 dense": q_other,
                  "bf16 codec": codec.decode(codec.encode(other, sizes)).astype(np.float64)}
    for student, x in students.items():
        loss, grad = adl_reference.adl(q, x, n)
        for name, q_hat in candidates.items():
            loss_hat, grad_hat = adl_reference.adl(q_hat, x, n_other)
            cosine = float(np.sum(grad * grad_hat) / np.linalg.norm(grad) / np.linalg.norm(grad_hat))
            assert result.errors[(student, name)][0] == pytest.approx((loss_hat - loss) / loss, rel=1e-6)
            assert result.errors[(student, name)][1] == pytest.approx(cosine, rel=1e-9)
    change = result.score_change
    assert change["max_abs"] == pytest.approx(np.abs(q_other - q).max(), rel=1e-12)
    assert change["mean_abs"] == pytest.approx(np.abs(q_other - q).mean(), rel=1e-12)
    crossed = (q >= codec.threshold) != (q_other >= codec.threshold)
    assert change["crossed"] == pytest.approx(crossed.mean(), rel=1e-12)
    assert change["normalizer_rel"] == pytest.approx(n_other / n - 1, rel=1e-6)


def test_codec_quality_command_prints_the_table(teacher, coco, student_config, tmp_path):
    from sadpipe.bench.codec_quality import command

    ann, images = coco
    args = ["--teacher", teacher, "--student", teacher, "--annotations", ann, "--images",
            images, "--student-config", student_config, "--limit", 2]
    result = CliRunner().invoke(command, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert f"2 images x 2 views (orig, hflip) at min_size {STUDENT_MIN}, max_size " \
           f"{STUDENT_MAX}" in result.output
    assert "4 views, 6,138 to 6,138 scores (anchors x classes) per view" in result.output
    for row in ("untrained  codec", "trained    drop-to-0", "codec payload", "dense fp16",
                "kept fraction per level: P3", "target |ADL rel err| <= 0.5% on every view:",
                "target payload >= 50x smaller than dense fp16:"):
        assert row in result.output, row

    result = CliRunner().invoke(command, [str(a) for a in args] + ["--compare-precision", "bf16"])
    assert result.exit_code == 0, result.output
    for row in ("trained    bf16 dense", "untrained  bf16 codec", "|q - q_fp32| max",
                "crossing the threshold", "bf16 cache against the fp32 teacher: |ADL rel err| <= 0.5%"):
        assert row in result.output, row

    other = make_teacher(tmp_path / "other.pt", categories=CATEGORIES[:1])
    result = CliRunner().invoke(command, [str(a) for a in args[:2]] + ["--student", str(other)]
                                + [str(a) for a in args[4:]])
    assert_one_line_error(result, f"{other}: teacher classes")
