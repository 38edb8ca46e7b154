"""An imported Detectron model used like any other checkpoint: as a live or cached teacher
(BGR pixels in [0, 255], the release's anchors) of students that must share its anchors, and
as `model.init` of a student of the same variant that exports back to Detectron."""
import json
import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sadpipe.commands.cache_logits import command as cache_command
from sadpipe.commands.export_detectron import command as export_command
from sadpipe.commands.import_detectron import command as import_command
from sadpipe.commands.train import command as train_command
from sadpipe.convert import detectron_import
from sadpipe.data.transforms import Preprocessing, make_recipe, make_view
from sadpipe.engine.teacher import Teacher
from sadpipe.modeling import backbones
from sadpipe.modeling.backbones import ArchSpec
from tests.sadpipe.conftest import assert_one_line_error, tiny_train_overrides, write_tiny_coco
from tests.sadpipe.convert import detectron_reference as ref

pytestmark = pytest.mark.numerics  # compares against an independent reference (float tolerances)

ARCH, DEPTHS = "tiny_r", (1, 1, 1, 1)
RELEASE_ANCHORS = ("model.anchor_size_factor=4.0", "model.aspect_ratios=[1.0, 2.0, 0.5]",
                   "model.anchor_convention=detectron")
DETECTRON_VARIANT = (f"model.arch={ARCH}", "model.norm=affine", "model.stride_in_1x1=true",
                     "model.p6_from=c5", "model.box_convention=detectron", *RELEASE_ANCHORS,
                     "input.channel_order=bgr", "input.pixel_range=255.0",
                     "input.mean=[102.9801, 115.9465, 122.7717]", "input.std=[1.0, 1.0, 1.0]")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny Detectron teacher (imported from a synthetic release file; its reduced-depth
    arch registered for this module) and tiny data labeled with COCO's 80 categories."""
    root = tmp_path_factory.mktemp("detectron_teacher")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(backbones.ARCHS, ARCH, ArchSpec("resnet", depths=DEPTHS))
        mp.setitem(detectron_import.DETECTRON_ARCHS, ARCH, True)
        blobs = ref.synthetic_blobs(DEPTHS, seed=5)
        ref.write_python2_pickle(root / "teacher.pkl", blobs)
        result = CliRunner().invoke(import_command, [str(root / "teacher.pkl"), "--arch", ARCH,
                                                     "--out", str(root / "teacher.pt"),
                                                     "--min-size", "64", "--max-size", "128"])
        assert result.exit_code == 0, result.output
        ann, images = write_tiny_coco(root / "data", num_images=4)
        data = json.loads(ann.read_text())
        data["categories"] = [{"id": i, "name": f"coco{i}"} for i in ref.COCO_IDS]
        ann.write_text(json.dumps(data))
        (root / "empty.toml").write_text("")
        yield {"root": root, "teacher": root / "teacher.pt", "blobs": blobs, "ann": ann,
               "images": images, "config": root / "empty.toml"}


def _train(world, out, *args, overrides=()):
    sets = [x for item in (*tiny_train_overrides(world["ann"], world["images"]),
                           "solver.max_iter=1", *overrides) for x in ("--set", item)]
    return CliRunner().invoke(train_command, ["--config", str(world["config"]), "--out", str(out),
                                              *sets, *map(str, args)])


def test_live_teacher_needs_the_students_anchors_to_be_its_own(world, tmp_path):
    refused = _train(world, tmp_path / "a", "--teacher", world["teacher"],
                     overrides=RELEASE_ANCHORS[:2])   # same sizes and ratio order, other convention
    assert_one_line_error(refused, "teacher anchor layout", "'convention': 'detectron'")
    ok = _train(world, tmp_path / "b", "--teacher", world["teacher"], overrides=RELEASE_ANCHORS)
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "b" / "model_final.pt").is_file()


def test_live_teacher_sees_the_cached_views_pixels(world):
    """A student batch (RGB, ImageNet mean/std) renormalised for the BGR, [0, 255] teacher
    gives the scores of the view made with the teacher's own preprocessing."""
    teacher = Teacher(world["teacher"])
    student = Preprocessing(min_size=64, max_size=128)
    image = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    recipe = make_recipe(student, 64, 96)
    cached = teacher.views_probs([image], [recipe], student)
    batch = torch.zeros(1, 3, 128, 128)
    batch[0, :, :64, :96] = make_view(image, recipe, student)
    live, mask = teacher.batch_view_probs(batch, [recipe], student)
    assert bool(mask.all())
    torch.testing.assert_close(live, cached, rtol=1e-4, atol=1e-5)


def test_shards_of_the_teacher_refuse_a_student_with_other_anchors(world, tmp_path):
    config = tmp_path / "student.toml"
    config.write_text('[model]\nanchor_size_factor = 4.0\naspect_ratios = [1.0, 2.0, 0.5]\n'
                      'anchor_convention = "detectron"\n[input]\nmin_size = 64\nmax_size = 128\n'
                      'train_min_sizes = [64]\n')
    result = CliRunner().invoke(cache_command, [
        "--teacher", str(world["teacher"]), "--annotations", str(world["ann"]), "--images",
        str(world["images"]), "--out", str(tmp_path / "shards"), "--student-config", str(config),
        "--device", "cpu", "--shard-size", "2"])
    assert result.exit_code == 0, result.output
    ok = _train(world, tmp_path / "ok", "--teacher-shards", tmp_path / "shards",
                overrides=RELEASE_ANCHORS)
    assert ok.exit_code == 0, ok.output
    refused = _train(world, tmp_path / "no", "--teacher-shards", tmp_path / "shards",
                     overrides=RELEASE_ANCHORS[:2])
    assert_one_line_error(refused, "anchor_layout.convention: shards have 'detectron', "
                                   "training expects 'torchvision'")


def test_student_of_the_detectron_variant_trains_from_it_and_exports(world, tmp_path):
    init = f"model.init={json.dumps(str(world['teacher']))}"
    refused = _train(world, tmp_path / "other", overrides=(f"model.arch={ARCH}", init))
    assert_one_line_error(refused, "model.init has model.norm = 'affine', the config 'bn'")
    trained = _train(world, tmp_path / "run", overrides=(*DETECTRON_VARIANT, init))
    assert trained.exit_code == 0, trained.output
    result = CliRunner().invoke(export_command, [str(tmp_path / "run" / "model_final.pt"),
                                                 "--out", str(tmp_path / "student.pkl")])
    assert result.exit_code == 0, result.output
    blobs = pickle.loads((tmp_path / "student.pkl").read_bytes(), encoding="latin1")["blobs"]
    assert sorted(blobs) == sorted(world["blobs"])
    changed = [n for n in blobs if not np.array_equal(blobs[n], world["blobs"][n])]
    assert "retnet_cls_pred_fpn3_w" in changed and "res2_0_branch2a_w" not in changed  # res2 frozen
