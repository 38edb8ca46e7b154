"""The RetinaNet bodies for your own data, side by side: parameters, GFLOPs and CPU images/s
at real resolution. A measurement, not a test::

    OMP_NUM_THREADS=1 python -m sadpipe.bench.bodies [--images 3] [--min-size 800]

Each arch is the whole detector (body, FPN P3–P7, RetinaNet head, 80 classes, 9 anchors per
location) with untrained weights: nothing is downloaded, and neither the FLOPs nor the
network's speed depend on the weights' values. GFLOPs are those of one forward pass at a 4:3
image of short side ``--min-size`` padded to 32 (800 → 1088 × 800), counted by
``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products, a
multiply-add counted as 2). Images/s run what ``sadpipe eval`` runs per image (resize and pad,
the network, decoding and NMS: :class:`~sadpipe.engine.inference.Predictor`) at batch 1 on
``--images`` random images of that size after one untimed image; the median is reported.
"""
from __future__ import annotations

import statistics
import time

import click
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from torchvision.ops.misc import FrozenBatchNorm2d

from sadpipe.data.transforms import Preprocessing
from sadpipe.engine.inference import Predictor
from sadpipe.modeling.anchors import AnchorLayout
from sadpipe.modeling.spec import ModelSpec

ARCHS = ("resnet50", "resnet34", "resnet18", "regnet_x_800mf", "mobilenet_v3_large")
NUM_CLASSES = 80
ASPECT = 4 / 3          # width / height of the measured images
PAD = 32                # input.size_divisibility of pipelines/custom_gpu_*.toml


def detector(arch: str, min_size: int) -> tuple[torch.nn.Module, Predictor]:
    """An untrained detector of ``arch`` (80 classes), and sadpipe's predictor of it."""
    spec = ModelSpec(arch=arch, categories=tuple((i, f"c{i}") for i in range(1, NUM_CLASSES + 1)),
                     anchor_layout=AnchorLayout(),
                     preprocessing=Preprocessing(min_size=min_size, max_size=2 * min_size,
                                                 size_divisibility=PAD))
    model = spec.build()
    return model, Predictor(model, spec)


def measure(arch: str, images: list[np.ndarray], min_size: int) -> dict:
    """Parameters (body, detector), GFLOPs of one forward pass and median images/s."""
    model, predictor = detector(arch, min_size)   # counted as built: batch norms unfolded
    batch, _ = predictor.prepare(images[:1])
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(batch)
    predictor(images[:1])   # warm-up: oneDNN kernels, anchors
    seconds = []
    for image in images:
        t0 = time.perf_counter()
        predictor([image])
        seconds.append(time.perf_counter() - t0)
    return {"arch": arch, "input": tuple(batch.shape[-2:]),
            "body_params": count_weights(model.backbone.body), "params": count_weights(model),
            "gflops": counter.get_total_flops() / 1e9,
            "images_per_s": 1.0 / statistics.median(seconds)}


def count_weights(module: torch.nn.Module) -> int:
    """Parameters as torchvision counts them: the frozen batch norms' scale and shift (buffers
    here) included, their running statistics not."""
    frozen = sum(m.weight.numel() + m.bias.numel() for m in module.modules()
                 if isinstance(m, FrozenBatchNorm2d))
    return sum(p.numel() for p in module.parameters()) + frozen


def format_table(rows: list[dict]) -> str:
    lines = ["| body | body params | detector params | GFLOPs | CPU images/s |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['arch']} | {r['body_params'] / 1e6:.1f} M | {r['params'] / 1e6:.1f} M | "
                     f"{r['gflops']:.0f} | {r['images_per_s']:.2f} |")
    return "\n".join(lines)


@click.command()
@click.option("--arch", "archs", multiple=True, type=click.Choice(ARCHS),
              help="Bodies to measure (repeatable; default: all).")
@click.option("--images", "num_images", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed images per body (after one untimed).")
@click.option("--min-size", type=click.IntRange(min=32), default=800, show_default=True,
              help="Short side of the images.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the random test images.")
def main(archs, num_images, min_size, seed):
    """Parameters, GFLOPs and CPU images/s (batch 1) of each body's RetinaNet. Use
    OMP_NUM_THREADS to fix the threads."""
    rng = np.random.default_rng(seed)
    width = round(min_size * ASPECT)
    images = [rng.integers(0, 256, size=(min_size, width, 3), dtype=np.uint8) for _ in range(num_images)]
    click.echo(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {num_images} images "
               f"{width}x{min_size}, batch 1, median")
    rows = [measure(arch, images, min_size) for arch in (archs or ARCHS)]
    click.echo(f"input (H, W) after padding: {rows[0]['input']}")
    click.echo(format_table(rows))


if __name__ == "__main__":
    main()
