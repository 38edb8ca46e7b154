"""`python -m sadpipe.bench.bodies`: its parameter counts against torchvision's own models and
its FLOP count against the convolutions' arithmetic, at a tiny size."""
import re

import torch.nn as nn
import torchvision
from click.testing import CliRunner

from sadpipe.bench import bodies


def _conv_flops(model: nn.Module, x) -> int:
    """2 × multiply-adds of every convolution (bias ignored: FlopCounterMode counts none)."""
    total = []

    def hook(module, inputs, output):
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total.append(2 * output.numel() * k)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    model(x)
    for handle in handles:
        handle.remove()
    return sum(total)


def test_parameters_and_flops():
    rows = {}
    for arch in ("resnet18", "mobilenet_v3_large"):
        image = bodies.np.zeros((64, 85, 3), dtype=bodies.np.uint8)
        rows[arch] = bodies.measure(arch, [image], 64)
        model, predictor = bodies.detector(arch, 64)
        batch, _ = predictor.prepare([image])
        assert rows[arch]["input"] == (64, 96)                  # 85 px padded to 32
        assert rows[arch]["gflops"] * 1e9 == _conv_flops(model, batch)
        assert rows[arch]["images_per_s"] > 0
    # the bodies are torchvision's ImageNet models without their classifier
    for arch, classifier in (("resnet18", "fc"), ("mobilenet_v3_large", "classifier")):
        model = torchvision.models.get_model(arch)
        head = sum(p.numel() for n, p in model.named_parameters() if n.startswith(classifier + "."))
        num_params = torchvision.models.get_model_weights(arch).DEFAULT.meta["num_params"]
        assert rows[arch]["body_params"] == num_params - head


def test_cli_prints_the_table():
    result = CliRunner().invoke(bodies.main, ["--arch", "regnet_x_800mf", "--images", "1",
                                              "--min-size", "64"])
    assert result.exit_code == 0, result.output
    assert re.search(r"torch \S+, \d+ threads; 1 images 85x64", result.output)
    assert re.search(r"\| regnet_x_800mf \| [\d.]+ M \| [\d.]+ M \| \d+ \| [\d.]+ \|", result.output)
