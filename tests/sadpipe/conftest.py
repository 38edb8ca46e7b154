"""Tiny generated COCO-format data for sadpipe tests (coloured rectangles and discs on noise),
tiny checkpoints, and fake ImageNet weight files in a hub cache (no download)."""
import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision
from PIL import Image, ImageDraw

from sadpipe.modeling.backbones import ARCHS, imagenet_weights

CATEGORIES = [{"id": 2, "name": "square"}, {"id": 5, "name": "disc"}]
RELEASE_HEAD_STD = 0.01  # torchvision's RetinaNet head init


def write_tiny_coco(root, *, num_images=8, seed=0, size=(96, 64)):
    """Write root/images/*.png and root/train.json; returns (json path, images dir)."""
    rng = np.random.default_rng(seed)
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        w, h = size
        pixels = rng.integers(0, 80, size=(h, w, 3), dtype=np.uint8)
        img = Image.fromarray(pixels)
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(1, 3))):
            side = int(rng.integers(12, 30))
            x0, y0 = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
            cat = CATEGORIES[int(rng.integers(2))]
            shape = draw.rectangle if cat["name"] == "square" else draw.ellipse
            shape([x0, y0, x0 + side - 1, y0 + side - 1], fill=(220, 200, 40))
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": cat["id"], "bbox": [x0, y0, side, side],
                                "area": side * side, "iscrowd": 0})
        name = f"{i:04d}.png"
        img.save(image_dir / name)
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
    ann = root / "train.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations,
                               "categories": CATEGORIES}))
    return ann, image_dir


def with_categories_reversed(ann, out):
    """Write ``out``: the COCO file ``ann`` with its ``categories`` list in reverse order (the
    same categories, boxes and ids: only the listing order differs). Returns ``out``."""
    data = json.loads(ann.read_text())
    data["categories"] = data["categories"][::-1]
    assert [c["id"] for c in data["categories"]] != sorted(c["id"] for c in data["categories"])
    out.write_text(json.dumps(data))
    return out


@pytest.fixture
def tiny_coco(tmp_path):
    return write_tiny_coco(tmp_path / "data")


TINY_OVERRIDES = (
    "model.arch=toy_student", "model.anchor_size_factor=1.0",
    "input.min_size=64", "input.max_size=128", "input.train_min_sizes=[64]",
    "solver.images_per_batch=2", "solver.base_lr=0.01", "solver.warmup_iters=2",
    "solver.max_iter=6", "solver.steps=[4]", "train.log_period=1", "train.checkpoint_period=2",
    "train.device=cpu",
)


def tiny_train_overrides(ann, images, **extra):
    out = list(TINY_OVERRIDES) + [f"data.train_annotations={json.dumps(str(ann))}",
                                  f"data.train_images={json.dumps(str(images))}"]
    return tuple(out) + tuple(f"{k}={v}" for k, v in extra.items())


def make_tiny_checkpoint(path, *, categories=CATEGORIES, seed=0, conv_gain=1.0, cls_gain=1.0,
                         cls_bias=-1.0):
    """An untrained ``toy_student`` detector saved as a sadpipe checkpoint (64/128 input).

    The class tower is drawn from N(0, (0.01 ``conv_gain``)²) (torchvision's release init
    times the gain) and the class layer scaled by ``cls_gain``, so the scores depend on the
    pixels; ``cls_bias`` sets the class prior (-1.0: plenty of boxes above 0.05)."""
    import torch

    from sadpipe.checkpoint import save_checkpoint
    from sadpipe.data.categories import class_order
    from sadpipe.data.transforms import Preprocessing
    from sadpipe.modeling.anchors import AnchorLayout
    from sadpipe.modeling.spec import ModelSpec

    spec = ModelSpec(arch="toy_student", categories=class_order(categories),
                     anchor_layout=AnchorLayout(size_factor=1.0),
                     preprocessing=Preprocessing(min_size=64, max_size=128))
    torch.manual_seed(seed)
    model = spec.build()
    head = model.head.classification_head
    with torch.no_grad():
        for conv in head.conv.modules():
            if isinstance(conv, torch.nn.Conv2d):
                conv.weight.normal_(0.0, RELEASE_HEAD_STD * conv_gain)
        head.cls_logits.weight.mul_(cls_gain)
        head.cls_logits.bias.fill_(cls_bias)
    save_checkpoint(path, spec, model)
    return path


def assert_one_line_error(result, *fragments):
    """A click result that failed the user-error way: exit 1, one `Error: ...` line holding
    every fragment, no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def kill_when_written(proc, path, *, timeout_s=300):
    """SIGKILL the running ``proc`` as soon as ``path`` exists: a run killed mid-way, its first
    outputs (a checkpoint, a shard) written. Fails if ``proc`` ends first."""
    deadline = time.time() + timeout_s
    while not path.exists():
        if proc.poll() is not None:
            stderr = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"run ended before writing {path.name}: {stderr}")
        assert time.time() < deadline, f"{path.name} not written in {timeout_s} s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


# torchvision ImageNet bodies without a download: one fake weight file per student body
STUDENT_ARCHS = ("resnet18", "resnet34", "mobilenet_v3_large", "regnet_x_800mf")


def fake_imagenet_state(name: str, seed: int) -> dict:
    """torchvision's model ``name`` with every tensor made distinct (random), batch norm with
    small running variances, so that a wrong eps would show: what a weight file holds."""
    generator = torch.Generator().manual_seed(seed)
    model = torchvision.models.get_model(name, weights=None)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                variance = 0.001 + 0.002 * torch.rand(module.running_var.shape, generator=generator)
                module.running_var.copy_(variance)
                module.running_mean.normal_(0.0, 0.1, generator=generator)
                module.weight.copy_(module.running_var.sqrt()
                                    * (0.5 + torch.rand(module.weight.shape, generator=generator)))
                module.bias.normal_(0.0, 0.1, generator=generator)
            elif isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.add_(0.01 * torch.randn(module.weight.shape, generator=generator))
                if module.bias is not None:
                    module.bias.normal_(0.0, 0.01, generator=generator)
    return model.state_dict()


@pytest.fixture(scope="session")
def torch_home(tmp_path_factory):
    """A TORCH_HOME whose hub cache holds a fake ImageNet file for each student body, under
    the file name of the weight enum torchvision downloads."""
    home = tmp_path_factory.mktemp("torch_home")
    cache = home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    for seed, arch in enumerate(STUDENT_ARCHS):
        name = ARCHS[arch].body
        torch.save(fake_imagenet_state(name, seed), cache / Path(imagenet_weights(name).url).name)
    return home


@pytest.fixture
def offline_cache(torch_home, monkeypatch):
    """The fake cache in place; any download attempt fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)

    def no_download(url, *args, **kwargs):
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return torch_home / "hub" / "checkpoints"
