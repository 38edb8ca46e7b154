"""Training-step throughput of the toy archs before and after the throughput work (issue 9).
A measurement, not a test::

    python -m sadpipe.bench.train_step [--images 64] [--iters 12] [--repeats 3] [--compile]

For ``toy_teacher`` and ``toy_student`` (their shipped configs), the same batches of the
embedded data are trained on in this one process, in these variants, alternating, and the
median images/s of ``--repeats`` runs is reported with its ratio to "before":

* ``before``: inputs padded to the coarsest stride (128) and laid out NCHW — what training
  did before;
* ``pad 32``: padded to a multiple of 32 (``input.size_divisibility``; exact anchor grids
  need no more);
* ``+ channels-last``: NHWC inputs on CPU (oneDNN then keeps the whole network NHWC) — the
  shipped setting;
* ``+ compile`` (``--compile``): ``torch.compile`` of the model on top; its compile time is
  reported apart (it recompiles per input size).

A step is forward, targets, losses, backward and the SGD update (``trainer.step_losses``);
batches are built beforehand, so data loading is reported apart, per batch. Target building
(anchors + matching + box encoding, inside the step) is also timed apart: the whole batch at
once ("targets ms", what training does) and image by image (what it did before).
"""
from __future__ import annotations

import contextlib
import io
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import click
import torch

from sadpipe.config import load_config
from sadpipe.data.coco import read_coco_json
from sadpipe.data.toy import generate_toy_dataset
from sadpipe.engine import streams
from sadpipe.engine.distributed import DistInfo
from sadpipe.engine.settings import DistillSettings, LossSettings, SolverSettings
from sadpipe.engine.trainer import build_optimizer, model_spec_from_config, step_losses
from sadpipe.modeling.targets import build_targets, match_anchors
from sadpipe.pipeline.shipped import SHIPPED_DIR

CONFIGS = {"toy_teacher": SHIPPED_DIR / "toy_teacher.toml",
           "toy_student": SHIPPED_DIR / "toy_student.toml"}
BEFORE_DIVISIBILITY = 128


@dataclass(frozen=True)
class Variant:
    name: str
    size_divisibility: int
    channels_last: bool
    compiled: bool = False


VARIANTS = (Variant("before", BEFORE_DIVISIBILITY, False), Variant("pad 32", 32, False),
            Variant("+ channels-last", 32, True))
COMPILED = Variant("+ compile", 32, True, compiled=True)


def make_batches(cfg: dict, spec, count: int) -> tuple[list[dict], float]:
    """``count`` training batches of the config's stream, and the seconds per batch it took to
    read, decode, augment and pad them."""
    data = cfg["data"]
    stream = streams.coco_stream(data["train_annotations"], data["train_images"], spec, cfg,
                                 DistInfo(), start_batch=0)
    t0 = time.perf_counter()
    batches = [next(stream) for _ in range(count)]
    return batches, (time.perf_counter() - t0) / count


class Stepper:
    """One variant's model and optimizer, stepping over fixed batches."""

    def __init__(self, cfg: dict, spec, variant: Variant):
        torch.manual_seed(0)
        self.cfg, self.spec = cfg, spec
        self.model = spec.build()
        self.model.channels_last = variant.channels_last
        self.optimizer = build_optimizer(self.model, SolverSettings.from_config(cfg))
        self.loss, self.distill = LossSettings.from_config(cfg), DistillSettings.from_config(cfg)
        self.forward = self.model
        self.compile_s = 0.0
        if variant.compiled:
            self.forward = torch.compile(self.model)

    def step(self, batch: dict) -> None:
        losses, _ = step_losses(self.forward, self.spec, batch, "cpu", loss=self.loss,
                                distill=self.distill)
        loss = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def images_per_s(self, batches: list[dict], warmup: int) -> float:
        t0 = time.perf_counter()
        for batch in batches[:warmup]:
            self.step(batch)
        self.compile_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        for batch in batches[warmup:]:
            self.step(batch)
        images = sum(len(b["image_ids"]) for b in batches[warmup:])
        return images / (time.perf_counter() - t0)


def target_ms(spec, batches: list[dict], *, per_image: bool = False) -> float:
    """Milliseconds per batch spent building anchors and matching targets: the whole batch at
    once (``build_targets``, what training does) or image by image (``match_anchors`` and the
    box encoding per image, what it did before)."""
    t0 = time.perf_counter()
    for batch in batches:
        anchors = spec.anchor_layout.anchors(tuple(batch["images"].shape[-2:]))
        if not per_image:
            build_targets(anchors, batch["targets"], convention=spec.boxes)
            continue
        for t in batch["targets"]:
            labels, matched = match_anchors(anchors, t["boxes"], t["labels"],
                                            crowd_boxes=t.get("crowd_boxes"), convention=spec.boxes)
            spec.boxes.encode(matched, anchors)
    return 1000 * (time.perf_counter() - t0) / len(batches)


def bench_arch(arch: str, annotations: Path, images: Path, variants, *, iters: int, warmup: int,
               repeats: int) -> list[dict]:
    rows = {v.name: {"arch": arch, "variant": v.name, "runs": [], "compile_s": 0.0} for v in variants}
    prepared = {}
    for v in variants:
        cfg = load_config(CONFIGS[arch], (f"data.train_annotations={json.dumps(str(annotations))}",
                                          f"data.train_images={json.dumps(str(images))}",
                                          "model.pretrained=false",
                                          f"input.size_divisibility={v.size_divisibility}"))
        spec = model_spec_from_config(cfg, read_coco_json(annotations)["categories"])
        batches, data_s = make_batches(cfg, spec, warmup + iters)
        prepared[v.name] = (cfg, spec, batches)
        target_ms(spec, batches[:1]), target_ms(spec, batches[:1], per_image=True)  # warm up
        rows[v.name].update(data_ms=1000 * data_s, target_ms=target_ms(spec, batches),
                            target_ms_per_image=target_ms(spec, batches, per_image=True),
                            pixels=statistics.mean(b["images"][0, 0].numel() for b in batches))
    for _ in range(repeats):  # alternate: the CPU may be shared
        for v in variants:
            cfg, spec, batches = prepared[v.name]
            stepper = Stepper(cfg, spec, v)
            rows[v.name]["runs"].append(stepper.images_per_s(batches, warmup))
            rows[v.name]["compile_s"] = max(rows[v.name]["compile_s"], stepper.compile_s)
    for row in rows.values():
        row["images_per_s"] = statistics.median(row["runs"])
    before = rows[variants[0].name]["images_per_s"]
    for row in rows.values():
        row["ratio"] = row["images_per_s"] / before
    return list(rows.values())


def format_table(rows: list[dict], *, show_compile: bool) -> str:
    head = (f"{'arch':<13}{'variant':<18}{'images/s':>9}{'× before':>10}{'padded px':>11}"
            f"{'data ms/batch':>15}{'targets ms':>12}{'image by image':>16}")
    if show_compile:
        head += f"{'warm-up s':>11}"
    lines = [head]
    for r in rows:
        line = (f"{r['arch']:<13}{r['variant']:<18}{r['images_per_s']:>9.2f}{r['ratio']:>9.2f}x"
                f"{r['pixels']:>11.0f}{r['data_ms']:>15.1f}{r['target_ms']:>12.1f}"
                f"{r['target_ms_per_image']:>16.1f}")
        if show_compile:
            line += f"{r['compile_s']:>11.1f}"
        lines.append(line)
    return "\n".join(lines)


@click.command()
@click.option("--images", default=64, show_default=True, help="Toy training images to generate.")
@click.option("--iters", default=12, show_default=True, help="Timed steps per run.")
@click.option("--warmup", default=3, show_default=True, help="Untimed steps first, per run.")
@click.option("--repeats", default=3, show_default=True,
              help="Runs per variant, alternating; the table shows the median.")
@click.option("--compile", "with_compile", is_flag=True,
              help="Also time torch.compile of the model (compiles for minutes on a CPU).")
@click.option("--arch", "archs", multiple=True, type=click.Choice(sorted(CONFIGS)),
              help="Only these archs (default: both).")
def main(images, iters, warmup, repeats, with_compile, archs):
    """Images/s of a toy_teacher / toy_student training step before and after the throughput
    work, same batches, this process. Use OMP_NUM_THREADS to fix the thread count.

    \b
    Example:
      python -m sadpipe.bench.train_step --iters 12 --repeats 3
    """
    variants = VARIANTS + ((COMPILED,) if with_compile else ())
    with tempfile.TemporaryDirectory() as tmp:
        with contextlib.redirect_stdout(io.StringIO()):
            split = generate_toy_dataset(Path(tmp) / "data", num_train=images, num_unlabeled=0,
                                         num_val=0)["splits"]["train"]
        annotations, image_dir = Path(split["annotation_file"]), Path(split["image_dir"])
        click.echo(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {images} toy "
                   f"images; {warmup} warm-up + {iters} timed steps per run, median of {repeats}")
        rows = []
        for arch in archs or sorted(CONFIGS, reverse=True):
            rows += bench_arch(arch, annotations, image_dir, variants, iters=iters, warmup=warmup,
                               repeats=repeats)
        click.echo(format_table(rows, show_compile=with_compile))


if __name__ == "__main__":
    main()
