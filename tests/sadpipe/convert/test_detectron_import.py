"""`sadpipe import-detectron` / `export-detectron` on synthetic release files: the imported
model computes what Detectron computes (an independent reference in detectron_reference.py),
files that do not fit are refused in one line, and import → export gives the same blobs."""
import json
import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sadpipe.checkpoint import load_model
from sadpipe.commands.export_detectron import command as export_command
from sadpipe.commands.import_detectron import command as import_command
from sadpipe.convert import detectron_import
from sadpipe.data.coco import CocoDataset
from sadpipe.data.transforms import make_recipe, make_view
from sadpipe.engine.inference import detect_dataset
from sadpipe.modeling import backbones
from sadpipe.modeling.backbones import ArchSpec
from tests.sadpipe.conftest import assert_one_line_error, make_tiny_checkpoint
from tests.sadpipe.convert import detectron_reference as ref

pytestmark = pytest.mark.numerics  # compares against an independent reference (float tolerances)

R50_DEPTHS = (3, 4, 6, 3)
# Reduced-depth bodies built by the same code, registered for these tests only.
TINY = {"tiny_r": (1, 1, 1, 1), "tiny_r_deep4": (1, 1, 2, 1)}
TINY_SIZES = ("--min-size", "64", "--max-size", "200")


@pytest.fixture
def tiny_archs(monkeypatch):
    for name, depths in TINY.items():
        monkeypatch.setitem(backbones.ARCHS, name, ArchSpec("resnet", depths=depths))
        monkeypatch.setitem(detectron_import.DETECTRON_ARCHS, name, True)


@pytest.fixture(scope="module")
def r50_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("r50") / "retinanet_R-50.pkl"
    blobs = ref.synthetic_blobs(R50_DEPTHS)
    ref.write_python2_pickle(path, ref.with_release_extras(blobs))
    return path, blobs


def _import(path, arch, out, *extra):
    return CliRunner().invoke(import_command, [str(path), "--arch", arch, "--out", str(out), *extra])


def _tiny_file(tmp_path, arch="tiny_r", cls_bias=-2.5, **kwargs):
    blobs = ref.synthetic_blobs(TINY[arch], seed=3, cls_bias=cls_bias)
    path = tmp_path / f"{arch}.pkl"
    ref.write_python2_pickle(path, ref.with_release_extras(blobs), **kwargs)
    return path, blobs


def test_release_anchors():
    p3 = ref.cell_anchors(8)
    np.testing.assert_allclose(p3[:4], [[-12, -12, 19, 19], [-8, -20, 15, 27], [-18, -8, 25, 15],
                                        [-16.1587, -16.1587, 23.1587, 23.1587]], atol=1e-4)


def test_r50_import_computes_detectrons_forward(r50_file, tmp_path):
    path, blobs = r50_file
    result = _import(path, "resnet50", tmp_path / "r50.pt")
    assert result.exit_code == 0, result.output
    assert "skipped: 5 momentum, 3 ImageNet leftover, 2 teacher" in result.output
    model, spec = load_model(tmp_path / "r50.pt")
    assert spec.category_ids == ref.COCO_IDS
    x = torch.from_numpy(np.random.default_rng(0).normal(0, 50, (1, 3, 128, 256)).astype(np.float32))
    _assert_same_forward(model, blobs, x, R50_DEPTHS)
    _assert_same_anchors(spec, (128, 256))


@pytest.mark.parametrize("cls_bias", [
    -2.5,    # plenty of scores > 0.05 on every level: top-1000 cuts, NMS, the 100 best
    -6.0,    # no score > 0.05: only P7 (threshold 0) gives detections
])
def test_tiny_import_detects_like_detectron(tiny_archs, tmp_path, cls_bias):
    path, blobs = _tiny_file(tmp_path, cls_bias=cls_bias)
    result = _import(path, "tiny_r", tmp_path / "tiny.pt", *TINY_SIZES)
    assert result.exit_code == 0, result.output
    model, spec = load_model(tmp_path / "tiny.pt")
    image = np.random.default_rng(1).integers(0, 256, (45, 70, 3), dtype=np.uint8)

    # preprocessing: BGR minus pixel means, resized to round(side · 64/45), zero-padded to 128;
    # torch computes bilinear source coordinates in float32: 1e-3 of a pixel value
    expected_blob, scale = ref.input_blob(image, 64, 200)
    recipe = make_recipe(spec.preprocessing, 45, 70)
    view = make_view(image, recipe, spec.preprocessing)
    assert tuple(view.shape) == (3, 64, 100) and expected_blob.shape == (1, 3, 128, 128)
    torch.testing.assert_close(view, torch.from_numpy(expected_blob[0, :, :64, :100]),
                               rtol=0, atol=2e-3)

    # detections in original pixels (boxes divided by Detectron's scale 64/45, not by the
    # per-axis ratios 64/45 and 100/70), COCO ids, +1 widths; the reference gets sadpipe's pixels
    ann = _write_coco(tmp_path, image)
    results = detect_dataset(tmp_path / "tiny.pt", CocoDataset(ann, tmp_path / "images"),
                             progress=False)
    batch = torch.zeros(1, 3, 128, 128)
    batch[0, :, :64, :100] = view
    _assert_same_forward(model, blobs, batch, TINY["tiny_r"])
    with torch.no_grad():
        outputs = ref.forward(blobs, batch, TINY["tiny_r"])
    expected = ref.coco_results(1, ref.detect(outputs, scale, (45, 70)))
    assert len(results) == len(expected) > 0
    assert [r["category_id"] for r in results] == [e["category_id"] for e in expected]
    for key in ("bbox", "score"):
        torch.testing.assert_close(torch.tensor([r[key] for r in results]),
                                   torch.tensor([e[key] for e in expected]), rtol=1e-5, atol=1e-5)


def _assert_same_forward(model, blobs, x, depths):
    with torch.no_grad():
        cls_logits, box_deltas = model(x)
        expected = ref.forward(blobs, x, depths)
    # Detectron's (N, A, K, H, W) per level → sadpipe's (N, (y·W + x)·A + a, K), levels in order
    cls = torch.cat([c.permute(0, 3, 4, 1, 2).reshape(1, -1, ref.NUM_CLASSES) for c, _ in expected], 1)
    box = torch.cat([b.permute(0, 3, 4, 1, 2).reshape(1, -1, 4) for _, b in expected], 1)
    torch.testing.assert_close(torch.sigmoid(cls_logits), cls, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(box_deltas, box, rtol=1e-5, atol=1e-5)


def _assert_same_anchors(spec, padded_hw):
    expected = []
    for lvl in ref.LEVELS:
        stride = 2 ** lvl
        h, w = padded_hw[0] // stride, padded_hw[1] // stride
        ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        shifts = np.stack([xs, ys, xs, ys], -1).reshape(-1, 1, 4) * stride
        expected.append((shifts + ref.cell_anchors(stride)[None]).reshape(-1, 4))
    torch.testing.assert_close(spec.anchor_layout.anchors(padded_hw),
                               torch.from_numpy(np.concatenate(expected).astype(np.float32)),
                               rtol=0, atol=0)


def _write_coco(root, image) -> str:
    from PIL import Image

    (root / "images").mkdir()
    Image.fromarray(image).save(root / "images" / "a.png")
    ann = root / "val.json"
    ann.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": image.shape[1], "height": image.shape[0]}],
        "annotations": [], "categories": [{"id": i, "name": f"c{i}"} for i in ref.COCO_IDS]}))
    return ann


@pytest.mark.parametrize("wrapped", [True, False])
def test_round_trip_gives_the_same_blobs(tiny_archs, tmp_path, wrapped):
    path, blobs = _tiny_file(tmp_path, wrapped=wrapped)
    assert _import(path, "tiny_r", tmp_path / "m.pt", *TINY_SIZES).exit_code == 0
    result = CliRunner().invoke(export_command, [str(tmp_path / "m.pt"), "--out", str(tmp_path / "back.pkl")])
    assert result.exit_code == 0, result.output
    back = pickle.loads((tmp_path / "back.pkl").read_bytes(), encoding="latin1")["blobs"]
    assert sorted(back) == sorted(blobs)
    for name, value in blobs.items():
        assert back[name].dtype == np.float32 and back[name].tobytes() == value.tobytes(), name


def test_r50_round_trip(r50_file, tmp_path):
    path, blobs = r50_file
    assert _import(path, "resnet50", tmp_path / "m.pt").exit_code == 0
    assert CliRunner().invoke(export_command, [str(tmp_path / "m.pt"), "--out",
                                               str(tmp_path / "back.pkl")]).exit_code == 0
    back = pickle.loads((tmp_path / "back.pkl").read_bytes(), encoding="latin1")["blobs"]
    assert sorted(back) == sorted(blobs)
    assert all(back[n].tobytes() == v.tobytes() for n, v in blobs.items())


def test_export_is_a_python2_protocol2_pickle(tiny_archs, tmp_path):
    import pickletools

    path, _ = _tiny_file(tmp_path)
    _import(path, "tiny_r", tmp_path / "m.pt", *TINY_SIZES)
    CliRunner().invoke(export_command, [str(tmp_path / "m.pt"), "--out", str(tmp_path / "back.pkl")])
    ops = list(pickletools.genops((tmp_path / "back.pkl").read_bytes()))
    assert ops[0][0].name == "PROTO" and ops[0][1] == 2
    assert {arg for op, arg, _ in ops if op.name == "GLOBAL"} == {
        "numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
    assert not any("UNICODE" in op.name for op, _, _ in ops)   # Python 2 str throughout


def test_wrong_arch_names_the_first_blob_that_does_not_fit(tiny_archs, tmp_path):
    path, _ = _tiny_file(tmp_path, "tiny_r_deep4")
    result = _import(path, "tiny_r", tmp_path / "m.pt", *TINY_SIZES)
    assert_one_line_error(result, str(path), "blob res4_1_branch2a_bn_b does not fit --arch tiny_r")
    assert not (tmp_path / "m.pt").exists()


def test_r50_file_as_resnet101_is_refused(r50_file, tmp_path):
    path, _ = r50_file
    result = _import(path, "resnet101", tmp_path / "m.pt")
    assert_one_line_error(result, str(path), "blob fpn_inner_res4_5_sum_lateral_b does not fit "
                                             "--arch resnet101")
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("edit, message", [
    (lambda b: b.pop("fpn_7_w"), "blob fpn_7_w is missing"),
    (lambda b: b.__setitem__("res3_0_branch2b_w", np.zeros((1, 2, 3, 3), np.float32)),
     "blob res3_0_branch2b_w has shape (1, 2, 3, 3), --arch tiny_r expects (128, 128, 3, 3)"),
    (lambda b: b.__setitem__("res2_0_branch2b_b", np.ones(64, np.float32)),
     "blob res2_0_branch2b_b is a non-zero conv bias"),
    (lambda b: b.__setitem__("conv1_w", np.array(["a", "b"])), "blob conv1_w is not a numeric array"),
])
def test_blobs_that_do_not_fit_are_refused(tiny_archs, tmp_path, edit, message):
    blobs = ref.synthetic_blobs(TINY["tiny_r"])
    edit(blobs)
    ref.write_python2_pickle(tmp_path / "bad.pkl", blobs)
    result = _import(tmp_path / "bad.pkl", "tiny_r", tmp_path / "m.pt", *TINY_SIZES)
    assert_one_line_error(result, str(tmp_path / "bad.pkl"), message)
    assert not (tmp_path / "m.pt").exists()


def test_truncated_file_is_refused(tiny_archs, tmp_path):
    path, _ = _tiny_file(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    assert_one_line_error(_import(path, "tiny_r", tmp_path / "m.pt"), str(path), "ends early")
    assert not (tmp_path / "m.pt").exists()


def test_unknown_arch_is_refused(tmp_path):
    result = _import(tmp_path / "x.pkl", "resnet18", tmp_path / "m.pt")
    assert_one_line_error(result, "--arch: 'resnet18'", "resnet50, resnet101, resnext101_64x4d")


def test_export_refuses_a_torchvision_style_checkpoint(tmp_path):
    checkpoint = make_tiny_checkpoint(tmp_path / "toy.pt")
    result = CliRunner().invoke(export_command, [str(checkpoint), "--out", str(tmp_path / "x.pkl")])
    assert_one_line_error(result, str(checkpoint), "has no Detectron counterpart")
    assert not (tmp_path / "x.pkl").exists()


def test_export_refuses_another_variant_of_a_paper_arch(tmp_path):
    from sadpipe.checkpoint import save_checkpoint

    spec = detectron_import.detectron_spec("resnet50")
    spec = type(spec)(**{**spec.__dict__, "stride_in_1x1": False})
    save_checkpoint(tmp_path / "m.pt", spec, spec.build())
    result = CliRunner().invoke(export_command, [str(tmp_path / "m.pt"), "--out", str(tmp_path / "x.pkl")])
    assert_one_line_error(result, "not a checkpoint of the Detectron variant",
                          "model.stride_in_1x1 is False, Detectron's models have True")
