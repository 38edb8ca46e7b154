import torch
from click.testing import CliRunner
from torchvision.models.detection import retinanet_resnet50_fpn
from torchvision.models.detection.image_list import ImageList

from sadpipe.checkpoint import load_model
from sadpipe.commands.import_torchvision import command
from sadpipe.convert.torchvision_import import coco_categories


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
