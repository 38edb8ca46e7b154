import json
import math

import pytest
import torch
from click.testing import CliRunner
from torchvision.models.detection import retinanet_resnet50_fpn
from torchvision.models.detection.image_list import ImageList

from sadpipe.checkpoint import load_model
from sadpipe.commands.import_torchvision import command
from sadpipe.commands.train import command as train_command
from sadpipe.convert.torchvision_import import coco_categories
from sadpipe.modeling.retinanet import CLS_LOGITS
from tests.sadpipe.conftest import assert_one_line_error, tiny_train_overrides


def test_import_gives_torchvision_outputs(tmp_path):
    torch.manual_seed(0)
    tv = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91).eval()
    torch.nn.init.normal_(tv.head.classification_head.cls_logits.bias, std=1.0)  # distinct classes
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    result = CliRunner().invoke(command, [str(tmp_path / "tv.pth"), "--out", str(tmp_path / "c.pt")])
    assert result.exit_code == 0, result.output
    model, spec = load_model(tmp_path / "c.pt")
    assert spec.num_classes == 80 and spec.category_ids[:3] == [1, 2, 3] and spec.category_ids[-1] == 90
    assert spec.category_ids == sorted(spec.category_ids)   # class c: the (c+1)-th id

    x = torch.randn(1, 3, 256, 384)
    with torch.no_grad():
        features = list(tv.backbone(x).values())
        tv_cls = tv.head.classification_head(features)
        tv_box = tv.head.regression_head(features)
        tv_anchors = tv.anchor_generator(ImageList(x, [(256, 384)]), features)[0]
        model.channels_last = False  # torchvision's own layout: the same arithmetic
        cls, box = model(x)
        model.channels_last = True  # sadpipe's CPU default: other blocking, float32 rounding
        cls_nhwc, box_nhwc = model(x)
    keep = [cid for cid, _ in coco_categories()]
    # slicing the conv changes its blocking: equal up to float32 rounding
    torch.testing.assert_close(cls, tv_cls[..., keep], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(box, tv_box, rtol=0, atol=0)
    torch.testing.assert_close(cls_nhwc, tv_cls[..., keep], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(box_nhwc, tv_box, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(spec.anchor_layout.anchors((256, 384)), tv_anchors, rtol=0, atol=0)


def test_import_refuses_other_files(tmp_path):
    torch.save({"foo": torch.zeros(1)}, tmp_path / "x.pth")
    result = CliRunner().invoke(command, [str(tmp_path / "x.pth"), "--out", str(tmp_path / "c.pt")])
    assert result.exit_code != 0
    assert "not a retinanet_resnet50_fpn state dict" in result.output
    assert not (tmp_path / "c.pt").exists()


def test_a_coco_retinanet_starts_a_teacher_for_other_classes(tmp_path, tiny_coco):
    """The README's way to a teacher for your classes: import torchvision's COCO RetinaNet,
    then train with model.init = it and model.init_reset_classes = true. Body, FPN, box head
    and class tower are torchvision's tensors; the class layer starts afresh for the 2 classes
    of the data (N(0, 0.01), the 0.01 prior); without the reset, a one-line refusal."""
    torch.manual_seed(0)
    tv = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    with torch.no_grad():   # distinct from any fresh init
        for p in tv.parameters():
            p.add_(0.01 * torch.randn_like(p))
    tv_state = tv.state_dict()
    torch.save(tv_state, tmp_path / "tv.pth")
    imported = CliRunner().invoke(command, [str(tmp_path / "tv.pth"), "--out", str(tmp_path / "coco.pt")])
    assert imported.exit_code == 0, imported.output

    ann, images = tiny_coco
    args = ["--config", "/dev/null"]
    for item in (*tiny_train_overrides(ann, images), "model.arch=resnet50", "model.anchor_size_factor=4.0",
                 f"model.init={json.dumps(str(tmp_path / 'coco.pt'))}", "solver.max_iter=0"):
        args += ["--set", item]
    refused = CliRunner().invoke(train_command, [*args, "--out", str(tmp_path / "refused")])
    assert_one_line_error(refused, "model.init is a resnet50 with 80 classes, the config trains a "
                                   "resnet50 with 2", "model.init_reset_classes = true")
    result = CliRunner().invoke(train_command, [*args, "--set", "model.init_reset_classes=true",
                                                "--out", str(tmp_path / "teacher")])
    assert result.exit_code == 0, result.output

    state = torch.load(tmp_path / "teacher" / "model_final.pt", weights_only=True)["state_dict"]
    fresh = {f"{CLS_LOGITS}.weight", f"{CLS_LOGITS}.bias"}
    kept = {k: v for k, v in tv_state.items() if k in state and k not in fresh}
    assert len(kept) == len(state) - 2   # every other tensor of the detector: torchvision's
    for key, value in kept.items():
        assert torch.equal(state[key], value), key
    weight, bias = state[f"{CLS_LOGITS}.weight"], state[f"{CLS_LOGITS}.bias"]
    assert weight.shape[0] == bias.shape[0] == 9 * 2
    assert weight.std().item() == pytest.approx(0.01, rel=0.1)
    torch.testing.assert_close(bias, torch.full_like(bias, -math.log((1 - 0.01) / 0.01)))
