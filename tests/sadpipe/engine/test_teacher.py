"""One definition of the teacher's view for the cache and the live teacher (issue 15):

* a batch mixing landscape and portrait views (so each view has batch padding past an
  edge) gets the same ADL targets from the cache as from the live teacher, up to the codec —
  and the padded-batch context, scored as one batch, would not give them;
* the cache stores a set in a shuffled order, so shard batches mix ground-truth and
  pseudo-labeled images as the COCO stream's batches do;
* images without boxes are neither cached nor trained on, on either path."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import shards
from sadpipe.cli import cli
from sadpipe.config import load_config
from sadpipe.data.coco import CocoDataset
from sadpipe.data.loader import BatchSchedule, TrainDataset
from sadpipe.engine.distributed import DistInfo
from sadpipe.engine.streams import LABELED, ShardSource, open_stream, training_sources
from sadpipe.engine.teacher import Teacher
from sadpipe.engine.trainer import model_spec_from_config, teacher_targets
from sadpipe.modeling.distill import adaptive_distillation_loss
from sadpipe.modeling.targets import IGNORE, build_targets
from tests.sadpipe.conftest import CATEGORIES, write_tiny_coco
from tests.sadpipe.engine.test_cache_logits import make_teacher

MIN_SIZE, MAX_SIZE, DIVISIBILITY = 64, 128, 32
THRESHOLD = shards.SparseCodec().threshold


def _merge(parts, out):
    """One COCO file over several (json, images dir) parts, files referenced by sub-folder."""
    merged = {"images": [], "annotations": [], "categories": CATEGORIES}
    for folder, (ann, _) in parts.items():
        data = json.loads(ann.read_text())
        offset = len(merged["images"])
        for im in data["images"]:
            merged["images"].append({**im, "id": im["id"] + offset,
                                     "file_name": f"{folder}/images/{im['file_name']}"})
        for a in data["annotations"]:
            merged["annotations"].append({**a, "id": len(merged["annotations"]) + 1,
                                          "image_id": a["image_id"] + offset})
    out.write_text(json.dumps(merged))
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("context")
    parts = {"wide": write_tiny_coco(root / "wide", num_images=2, seed=0, size=(96, 64)),
             "tall": write_tiny_coco(root / "tall", num_images=2, seed=1, size=(64, 96))}
    ann = _merge(parts, root / "mixed.json")
    config = root / "student.toml"
    config.write_text(f"[model]\narch = \"toy_student\"\nanchor_size_factor = 1.0\n"
                      f"[input]\ntrain_min_sizes = [{MIN_SIZE}]\nmax_size = {MAX_SIZE}\n"
                      f"size_divisibility = {DIVISIBILITY}\n"
                      f"[solver]\nimages_per_batch = 4\n[train]\ndevice = \"cpu\"\n")
    teacher = make_teacher(root / "teacher.pt")
    shard_dir = root / "shards"
    _cache(teacher, ann, root, shard_dir, config, shard_size=4)
    return {"teacher": teacher, "ann": ann, "images": root, "config": config, "shards": shard_dir}


def _cache(teacher, ann, images, out, config, *, shard_size):
    result = CliRunner().invoke(cli, [str(a) for a in (
        "cache-logits", "--teacher", teacher, "--annotations", ann, "--images", images,
        "--out", out, "--student-config", config, "--device", "cpu", "--shard-size", shard_size)])
    assert result.exit_code == 0, result.output
    return out


def _first_batch(world):
    cfg = load_config(world["config"])
    manifest = shards.read_manifest(world["shards"])
    spec = model_spec_from_config(cfg, manifest["header"]["categories"])
    sources = training_sources(cfg["data"], {LABELED: world["shards"]}, distill=True)
    batch = next(open_stream(LABELED, sources[LABELED], spec, cfg, DistInfo(), start_batch=0))
    return cfg, spec, batch


def _adl(logits, probs, mask, labels, normalizer):
    x = logits.clone().requires_grad_(True)
    adl_labels = torch.where(mask, labels, torch.full_like(labels, IGNORE))
    loss = adaptive_distillation_loss(x, probs, adl_labels, max(normalizer, 1.0))
    loss.backward()
    return float(loss.detach()), x.grad.reshape(-1).double()


@pytest.mark.numerics
def test_cache_and_live_teacher_give_a_mixed_batch_the_same_targets(world):
    cfg, spec, batch = _first_batch(world)
    images = batch["images"]
    sizes = {tuple(r["padded_size"]) for r in batch["recipes"]}
    assert sizes == {(64, 96), (96, 64)} and tuple(images.shape[-2:]) == (96, 96)
    teacher = Teacher(world["teacher"])
    cached = teacher_targets(batch, images, spec, "cpu")
    live = teacher_targets(batch, images, spec, "cpu", teacher=teacher)
    assert torch.equal(cached[1], live[1])                            # the same anchors
    assert cached[2] == pytest.approx(live[2], rel=1e-5)              # the exact normaliser
    kept = live[1][:, :, None] & (live[0] >= THRESHOLD * 1.01)
    assert 0 < int(kept.sum())
    torch.testing.assert_close(cached[0][kept], live[0][kept], rtol=4e-3, atol=0)  # 11-bit logits

    anchors = spec.anchor_layout.anchors(tuple(images.shape[-2:]))
    labels, _ = build_targets(anchors, batch["targets"], convention=spec.boxes)
    logits = torch.randn(live[0].shape, generator=torch.Generator().manual_seed(0)) - 3.0
    loss_cached, grad_cached = _adl(logits, *cached[:2], labels, cached[2])
    loss_live, grad_live = _adl(logits, *live[:2], labels, live[2])
    assert abs(loss_cached - loss_live) <= 0.005 * loss_live
    assert float(torch.nn.functional.cosine_similarity(grad_cached, grad_live, dim=0)) >= 0.999

    # control: scored as one padded batch, the teacher sees the other views' padding past
    # each view's edges, and its scores differ by more than the codec's precision
    with torch.no_grad():
        batch_probs = torch.sigmoid(teacher.model(images)[0])
    mask = live[1]
    assert float((batch_probs[mask] - live[0][mask]).abs().max()) > 0.01


def test_shard_batches_mix_the_set_like_the_coco_stream(tmp_path):
    """24 images, the first 12 (ids 1-12) standing for the ground-truth part of a pseudo set,
    cached in shards of 6: in id order every batch of 4 would be one part only."""
    ann, images = write_tiny_coco(tmp_path / "set", num_images=24, seed=3)
    config = tmp_path / "student.toml"
    config.write_text(f"[input]\ntrain_min_sizes = [{MIN_SIZE}]\nmax_size = {MAX_SIZE}\n")
    teacher = make_teacher(tmp_path / "teacher.pt")
    out = _cache(teacher, ann, images, tmp_path / "shards", config, shard_size=6)
    manifest = shards.read_manifest(out)
    stored = [s["target"]["image_id"] for s in shards.shard_pipeline(out, shuffle=False)]
    for i in range(0, 24, 6):  # every shard holds both parts
        assert {image_id <= 12 for image_id in stored[i:i + 6]} == {True, False}

    cfg = load_config(None, (f"input.train_min_sizes=[{MIN_SIZE}]", f"input.max_size={MAX_SIZE}",
                             "model.arch=toy_student", "model.anchor_size_factor=1.0",
                             "solver.images_per_batch=4", "train.device=cpu"))
    spec = model_spec_from_config(cfg, manifest["header"]["categories"])
    stream = open_stream(LABELED, ShardSource(out), spec, cfg, DistInfo(), start_batch=0)
    shard_batches = [next(stream)["image_ids"] for _ in range(18)]       # 3 epochs
    coco = [[i + 1 for i, _ in b] for b, _ in zip(BatchSchedule(24, 4, seed=0), range(18))]

    def single_part(batches):
        return np.mean([len({i <= 12 for i in b}) == 1 for b in batches])

    # a random batch of 4 of 24 is single-part with probability 2 C(12,4) / C(24,4) = 9 %
    assert single_part(shard_batches) <= 0.3 and single_part(coco) <= 0.3
    shares = [np.mean([i <= 12 for i in b]) for b in shard_batches]
    assert 0.35 <= np.mean(shares) <= 0.65


def test_images_without_boxes_are_neither_cached_nor_trained_on(tmp_path):
    ann, images = write_tiny_coco(tmp_path / "set", num_images=4, seed=4)
    data = json.loads(ann.read_text())
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 2]
    ann.write_text(json.dumps(data))
    config = tmp_path / "student.toml"
    config.write_text(f"[input]\ntrain_min_sizes = [{MIN_SIZE}]\nmax_size = {MAX_SIZE}\n")
    out = _cache(make_teacher(tmp_path / "teacher.pt"), ann, images, tmp_path / "shards", config,
                 shard_size=2)
    manifest = shards.read_manifest(out)
    cached = sorted(s["target"]["image_id"] for s in shards.shard_pipeline(out, shuffle=False))
    assert cached == [1, 3, 4] and manifest["skipped"] == []
    assert manifest["header"]["images"]["without_boxes"] == "left out (not trained on)"
    coco = CocoDataset(ann, images)
    online = TrainDataset(coco, [c["id"] for c in CATEGORIES], spec_prep(), train_min_sizes=[64])
    assert sorted(r.image_id for r in online.records) == cached


def spec_prep():
    from sadpipe.data.transforms import Preprocessing
    return Preprocessing(min_size=MIN_SIZE, max_size=MAX_SIZE)
