"""The deployable ImageNet bodies (ResNet-18/34, MobileNetV3-Large, RegNetX-800MF): built from
torchvision's classification models, their ImageNet weights loaded through torchvision's own
path (weight enum, hub cache) from a state dict this test puts where that cache looks, every
tensor of it landing in the body, and the body computing what torchvision's model computes."""
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torchvision

from sadpipe.modeling.anchors import AnchorLayout
from sadpipe.modeling.backbones import ARCHS, imagenet_weights
from sadpipe.modeling.retinanet import RetinaNet
from tests.sadpipe.conftest import STUDENT_ARCHS

CLASSIFIERS = ("fc.", "classifier.")          # torchvision's ImageNet heads: not in a detector
# The feature extractor of torchvision's model: everything before its pooling and classifier.
REFERENCE_TRUNKS = {
    "resnet": lambda m: nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3,
                                      m.layer4),
    "mobilenet": lambda m: m.features,
    "regnet_imagenet": lambda m: nn.Sequential(m.stem, m.trunk_output),
}
FROZEN_BLOCKS = {   # the stem and the stride-4 stage, by torchvision's parameter names
    "resnet": ("conv1.", "layer1."),
    "mobilenet": ("features.0.", "features.1.", "features.2.", "features.3."),
    "regnet_imagenet": ("stem.", "trunk_output.block1."),
}


@pytest.mark.numerics   # compares against an independent reference (float tolerances)
@pytest.mark.parametrize("arch", STUDENT_ARCHS)
def test_imagenet_weights_land_in_the_body(arch, offline_cache):
    spec = ARCHS[arch]
    path = offline_cache / Path(imagenet_weights(spec.body).url).name
    stored = {k: v for k, v in torch.load(path, weights_only=True).items()
              if not k.startswith(CLASSIFIERS) and not k.endswith("num_batches_tracked")}
    model = RetinaNet(arch, 3, AnchorLayout(), pretrained=True)
    body = model.backbone.body.state_dict()
    # every tensor of the file is in the body and every body tensor came from the file
    # (all are distinct random values, so a match by value is a match by identity)
    assert len(body) == len(stored)
    unmatched = [k for k, v in stored.items()
                 if not any(b.shape == v.shape and torch.equal(b, v) for b in body.values())]
    assert unmatched == []

    reference = torchvision.models.get_model(spec.body, weights=None)
    reference.load_state_dict(torch.load(path, weights_only=True))
    trunk = REFERENCE_TRUNKS[spec.family](reference).eval()
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        want = trunk(x)
        got = model.backbone.body(x)["2"]   # C5, the FPN's last input
    assert got.shape == want.shape
    assert float((got - want).norm() / want.norm()) < 1e-4


@pytest.mark.parametrize("arch", STUDENT_ARCHS)
def test_stem_and_stride_4_stage_are_frozen(arch):
    """As the paper bodies (torchvision's trainable_layers=3): frozen BN everywhere, the
    stem's and the stride-4 stage's convolutions not trained."""
    spec = ARCHS[arch]
    model = RetinaNet(arch, 3, AnchorLayout())
    body = model.backbone.body
    assert not any(isinstance(m, nn.BatchNorm2d) for m in body.modules())
    reference = torchvision.models.get_model(spec.body, weights=None)
    convs = [f"{name}.{kind}" for name, m in reference.named_modules() if isinstance(m, nn.Conv2d)
             for kind, _ in m.named_parameters()]
    ours = [(n, p.requires_grad) for n, p in body.named_parameters()]   # frozen BN: buffers only
    reference_names = [n for n, _ in reference.named_parameters() if n in convs]
    assert len(ours) == len(reference_names)   # the same convolutions, in torchvision's order
    assert [p.shape for _, p in body.named_parameters()] == \
        [p.shape for n, p in reference.named_parameters() if n in convs]
    frozen = [name.startswith(FROZEN_BLOCKS[spec.family]) for name in reference_names]
    assert [not trainable for _, trainable in ours] == frozen
    assert 0 < sum(frozen) < len(frozen)


@pytest.mark.parametrize("arch", STUDENT_ARCHS)
def test_levels_p3_to_p7(arch):
    model = RetinaNet(arch, 3, AnchorLayout())
    layout = model.anchor_layout
    with torch.no_grad():
        cls_logits, box_deltas = model(torch.randn(1, 3, 128, 192))
    strides = (8, 16, 32, 64, 128)          # P3..P7: ceil(side / stride) cells each
    anchors = sum(-(-128 // s) * -(-192 // s) for s in strides) * layout.num_anchors
    assert cls_logits.shape == (1, anchors, 3) and box_deltas.shape == (1, anchors, 4)


def test_without_the_file_torchvision_downloads_it_into_the_hub_cache(tmp_path, monkeypatch):
    """The user's first `model.pretrained = true`: torchvision's URL, into TORCH_HOME's hub
    cache, its sha256 prefix checked (the download itself is replaced here: no network)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, dst, hash_prefix))
        raise OSError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    with pytest.raises(OSError, match="no network"):
        RetinaNet("resnet18", 3, AnchorLayout(), pretrained=True)
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    assert calls == [(url, str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"), "f37072fd")]
