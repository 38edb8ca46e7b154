"""Inference speed of detectors, same images, same process. A measurement, not a test::

    python -m sadpipe.bench.inference CKPT [CKPT ...] [--images 96] [--batch-size 8] [--repeats 5]

Each checkpoint runs what ``sadpipe eval`` runs per batch — resize and pad
(:meth:`~sadpipe.engine.inference.Predictor.prepare`), the network
(:meth:`~sadpipe.engine.inference.Predictor.forward`) and post-processing (decode, clip, NMS:
:meth:`~sadpipe.engine.inference.Predictor.detections`) — at its test size on the same
images: the embedded val of ``--seed``, rendered and JPEG-coded in memory as ``sadpipe
toy-data`` writes them (no file reads, no COCOeval). The
models alternate, ``--repeats`` times, and the table gives the median of each phase in
milliseconds per image and images/s, with the speed ratio to the first checkpoint (the
median of the ratios of the passes run back to back, and their quartiles). The last line
is ``images_per_s: FILE=X FILE=Y ...``.

Why a benchmark and not the eval stages' rate: a ``sadpipe eval`` of the 300-image embedded
val spends ~4 s importing torch and torchvision and ~1.3 s in COCOeval around ~3 s of
detection, so every model's stage ran at ~27–36 images/s whatever its network cost.
"""
from __future__ import annotations

import io
import statistics
import time
from pathlib import Path

import click
import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from sadpipe.checkpoint import load_model
from sadpipe.data.toy import SPLITS, jpeg_bytes
from sadpipe.data.toy_scene import render_toy_image
from sadpipe.data.transforms import aspect_batches
from sadpipe.engine.inference import Predictor

PHASES = ("prepare", "forward", "detections")
# Predictor's batch-norm folding on and off: what --compare-unfolded runs
VARIANTS = {"": True, "unfolded": False}
VAL_SPLIT_ID = dict(SPLITS)["val"]


def toy_val_images(seed: int, count: int) -> list[np.ndarray]:
    """The first ``count`` images (H, W, 3) uint8 of the embedded val split of ``seed``, as
    decoded from the JPEG files ``sadpipe toy-data`` writes."""
    return [np.asarray(Image.open(io.BytesIO(jpeg_bytes(render_toy_image(seed, VAL_SPLIT_ID, i).pixels)))
                       .convert("RGB")) for i in range(count)]


def batches_of(images: list[np.ndarray], batch_size: int, *,
               aspect_order: bool = False) -> list[list[np.ndarray]]:
    """``images`` in batches as ``sadpipe eval`` forms them (file order: landscape and
    portrait mixed, each batch padded to its largest view, as in training), or with like
    aspect ratios together (``aspect_order``: little padding)."""
    if not aspect_order:
        return [images[start:start + batch_size] for start in range(0, len(images), batch_size)]
    return [[images[i] for i in batch]
            for batch in aspect_batches([im.shape[:2] for im in images], batch_size)]


def time_phases(predictor: Predictor, batches: list[list[np.ndarray]]) -> dict:
    """Seconds spent in each phase over all ``batches``."""
    spent = dict.fromkeys(PHASES, 0.0)
    for images in batches:
        t0 = time.perf_counter()
        batch, recipes = predictor.prepare(images)
        t1 = time.perf_counter()
        outputs = predictor.forward(batch)
        t2 = time.perf_counter()
        predictor.detections(outputs, recipes, tuple(batch.shape[-2:]))
        t3 = time.perf_counter()
        for phase, seconds in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2)):
            spent[phase] += seconds
    return spent


def forward_gflops(predictor: Predictor, batches: list[list[np.ndarray]]) -> float:
    """GFLOP of the network per image over ``batches`` (torch's operator counts: convolutions
    and matrix products; pre- and post-processing are not counted)."""
    counter = FlopCounterMode(display=False)
    with counter:
        for images in batches:
            predictor.forward(predictor.prepare(images)[0])
    return counter.get_total_flops() / sum(len(images) for images in batches) / 1e9


def bench(checkpoints: list[Path], images: list[np.ndarray], *, batch_size: int, repeats: int,
          aspect_order: bool = False, compare_unfolded: bool = False) -> list[dict]:
    """One row per checkpoint: params, the network's GFLOP per image, median ms/image per
    phase, images/s, speed ratio to the first (median over the passes of each pass's ratio).
    Batch norms folded, as ``sadpipe eval`` runs them; ``compare_unfolded``: two rows per
    checkpoint, as :data:`VARIANTS`."""
    batches = batches_of(images, batch_size, aspect_order=aspect_order)
    variants = VARIANTS if compare_unfolded else {"": True}
    predictors, params, names, gflops = [], [], [], []
    for path in checkpoints:
        model, spec = load_model(path)
        for variant, fold in variants.items():
            predictor = Predictor(model, spec, fold_norms=fold)
            time_phases(predictor, batches)   # warm-up: oneDNN primitives and anchors of each shape
            gflops.append(forward_gflops(predictor, batches))
            predictors.append(predictor)
            params.append(sum(p.numel() for p in model.parameters()))   # as trained: norms unfolded
            names.append(f"{path}:{variant}" if variant else str(path))
    runs = [[] for _ in predictors]
    for _ in range(repeats):   # alternate: a shared CPU slows every model alike
        for predictor, model_runs in zip(predictors, runs):
            model_runs.append(time_phases(predictor, batches))
    totals = [[sum(run.values()) for run in model_runs] for model_runs in runs]
    rows = []
    for name, predictor, count, flops, model_runs, model_totals in zip(names, predictors, params, gflops,
                                                                       runs, totals):
        row = {"checkpoint": name, "arch": predictor.spec.arch, "params": count, "gflops": flops,
               "images_per_s": len(images) / statistics.median(model_totals),
               **ratio_quartiles(totals[0], model_totals)}
        for phase in PHASES:
            row[f"{phase}_ms"] = 1000 * statistics.median(run[phase] for run in model_runs) / len(images)
        rows.append(row)
    return rows


def ratio_quartiles(first: list[float], own: list[float]) -> dict:
    """Speed ratio to the first model: the median of the passes' ratios ``first / own`` (pass
    k of every model runs back to back, so a slow spell of a shared machine cancels out of
    each ratio) and their quartiles (how far one run's figure can move)."""
    ratios = [f / o for f, o in zip(first, own)]
    q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return {"ratio": statistics.median(ratios), "ratio_q1": q1, "ratio_q3": q3}


def format_table(rows: list[dict]) -> str:
    lines = [f"{'checkpoint':<44}{'arch':<17}{'params':>9}{'GFLOP':>7}"
             + "".join(f"{p + ' ms':>15}" for p in PHASES)
             + f"{'images/s':>10}{'× first':>9}{'quartiles':>13}"]
    for r in rows:
        name = r["checkpoint"] if len(r["checkpoint"]) <= 43 else "…" + r["checkpoint"][-42:]
        lines.append(f"{name:<44}{r['arch']:<17}{r['params'] / 1e6:>8.2f}M{r['gflops']:>7.2f}"
                     + "".join(f"{r[f'{p}_ms']:>15.2f}" for p in PHASES)
                     + f"{r['images_per_s']:>10.1f}{r['ratio']:>8.2f}x"
                     + f"{r['ratio_q1']:>7.2f}–{r['ratio_q3']:.2f}")
    return "\n".join(lines)


@click.command()
@click.argument("checkpoints", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--images", "num_images", type=click.IntRange(min=1), default=96, show_default=True,
              help="Embedded val images to run (rendered in memory).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the embedded world whose val images are run.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images per forward, padded to a common size (as `sadpipe eval --batch-size`).")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Passes over the images per model, models alternating; medians reported.")
@click.option("--compare-unfolded", is_flag=True,
              help="Run each checkpoint both ways, alternating in this process: as `sadpipe eval` "
                   "does (batch norms folded) and with its norms unfolded (`FILE:unfolded`).")
@click.option("--aspect-order", is_flag=True,
              help="Batch images of like aspect ratio together (less padding) instead of in file "
                   "order as `sadpipe eval` does.")
def main(checkpoints, num_images, seed, batch_size, repeats, compare_unfolded, aspect_order):
    """Images/s of each checkpoint's inference (pre-processing, network, post-processing; no
    COCOeval) on the embedded val images, this process. Use OMP_NUM_THREADS to fix threads.

    \b
    Example (the toy paper table's teacher and students):
      python -m sadpipe.bench.inference sadpipe/zoo/toy_teacher.pt \\
          sadpipe/zoo/toy_student_baseline.pt sadpipe/zoo/toy_student_sad.pt
    """
    images = toy_val_images(seed, num_images)
    norms = "batch norms folded and unfolded" if compare_unfolded else "batch norms folded"
    click.echo(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {num_images} "
               f"embedded val images (seed {seed}), batch {batch_size}, median of {repeats}; "
               f"{norms}, batches in {'aspect-ratio order' if aspect_order else 'file order'}")
    rows = bench(list(checkpoints), images, batch_size=batch_size, repeats=repeats,
                 aspect_order=aspect_order, compare_unfolded=compare_unfolded)
    click.echo(format_table(rows))
    click.echo("images_per_s: " + " ".join(f"{Path(r['checkpoint']).name}={r['images_per_s']:.1f}"
                                           for r in rows))


if __name__ == "__main__":
    main()
