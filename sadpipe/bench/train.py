"""Speed of SAD training from cached teacher shards vs a live teacher (issue 5). A
measurement, not a test::

    python -m sadpipe.bench.train [--images 64] [--iters 40] [--warmup 20] [--teacher CKPT]

Generates the embedded toy data in a temporary folder, trains a quick toy teacher (or takes
``--teacher``), caches its scores with ``sadpipe cache-logits``, then trains the SAME student
config (``pipelines/toy_student_sad.toml``: toy_student, same batch, same data) in this one
process, with ``--teacher-shards`` and online with ``--teacher``, alternating, ``--repeats``
times (the CPU may be shared: the table shows each mode's median run and the median of the
per-repeat ratios). Each run does
``--warmup`` iterations, then ``--iters`` timed ones, logging every ``--warmup`` iterations
(the embedded config's own log period by default: logging computes the mean ADW, so it
costs about as much as in real training). The table comes from the metrics.jsonl records of
the timed iterations: images/s over their wall time, the fraction of step time spent
waiting for the next batch, and step time split into data and the rest (forward, teacher,
losses, backward, optimizer, logging).

Target (issue 5): shards ≥ 1.5× the images/s of online mode.
"""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import click
import torch

from sadpipe.config import load_config
from sadpipe.data.toy import generate_toy_dataset
from sadpipe.engine.run_dir import FINAL_MODEL, METRICS_FILE
from sadpipe.engine.trainer import train
from sadpipe.pipeline.shipped import SHIPPED_DIR

TEACHER_CONFIG = SHIPPED_DIR / "toy_teacher.toml"
STUDENT_CONFIG = SHIPPED_DIR / "toy_student_sad.toml"
TARGET_RATIO = 1.5
NEVER = 10 ** 9  # checkpoint period of the timed runs: no periodic checkpoints


@dataclass(frozen=True)
class Timing:
    """One mode's timed iterations."""

    mode: str
    images_per_s: float
    data_fraction: float
    step_ms: float

    @property
    def data_ms(self) -> float:
        return self.step_ms * self.data_fraction


def data_overrides(annotations: Path, images: Path) -> list[str]:
    return [f"data.train_annotations={json.dumps(str(annotations))}",
            f"data.train_images={json.dumps(str(images))}"]


def quick_teacher(workdir: Path, annotations: Path, images: Path, *, iters: int, device: str) -> Path:
    """Train the toy teacher for a few iterations (its speed, not its accuracy, matters here;
    an undertrained teacher keeps more scores above the codec's threshold, so its shards are
    larger and slower to decode than a trained teacher's). Reuses one trained earlier in
    ``workdir``."""
    out = workdir / "teacher"
    if (out / FINAL_MODEL).exists():
        return out / FINAL_MODEL
    cfg = load_config(TEACHER_CONFIG, (*data_overrides(annotations, images),
                                       f"solver.max_iter={iters}", f"train.device={json.dumps(device)}",
                                       f"train.log_period={NEVER}", f"train.checkpoint_period={NEVER}"))
    return train(cfg, out).final_model


def cache_shards(teacher: Path, annotations: Path, images: Path, out: Path, *, shard_size: int,
                 device: str) -> dict:
    """`sadpipe cache-logits` for the student's views; returns the manifest's totals."""
    from sadpipe.commands.cache_logits import command as cache_command

    cache_command.main(["--teacher", str(teacher), "--annotations", str(annotations),
                        "--images", str(images), "--out", str(out), "--student-config",
                        str(STUDENT_CONFIG), "--shard-size", str(shard_size), "--device", device],
                       standalone_mode=False)
    return json.loads((out / "manifest.json").read_text())["totals"]


def time_mode(mode: str, out: Path, overrides: list[str], *, warmup: int, iters: int,
              **sources) -> Timing:
    """Train the student for warmup + iters iterations, logging every ``warmup`` (iters is a
    multiple of it); time the last iters from their log records."""
    cfg = load_config(STUDENT_CONFIG, (*overrides, f"solver.max_iter={warmup + iters}",
                                       f"train.log_period={warmup}", f"train.checkpoint_period={NEVER}"))
    shutil.rmtree(out, ignore_errors=True)  # this benchmark's own run folder, from a former run
    train(cfg, out, **sources)
    records = [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]
    timed = [r for r in records if r["iteration"] > warmup]
    images = cfg["solver"]["images_per_batch"] * warmup  # per record
    seconds = [images / r["images_per_s"] for r in timed]
    data = sum(r["data_fraction"] * s for r, s in zip(timed, seconds))
    return Timing(mode=mode, images_per_s=images * len(timed) / sum(seconds),
                  data_fraction=data / sum(seconds), step_ms=1000 * sum(seconds) / iters)


def median_timing(timings: list[Timing]) -> Timing:
    """The repeat with the median images/s (an actual run, not a mix of runs)."""
    return sorted(timings, key=lambda t: t.images_per_s)[(len(timings) - 1) // 2]


def format_table(rows: list[Timing]) -> str:
    lines = [f"{'mode':<8}{'images/s':>10}{'step ms':>10}{'data ms':>10}{'other ms':>10}"
             f"{'data fraction':>15}"]
    lines += [f"{t.mode:<8}{t.images_per_s:>10.2f}{t.step_ms:>10.1f}{t.data_ms:>10.1f}"
              f"{t.step_ms - t.data_ms:>10.1f}{t.data_fraction:>15.3f}" for t in rows]
    return "\n".join(lines)


@contextlib.contextmanager
def quiet():
    """Keep the trainer's per-step log lines off the terminal; show them if a run fails."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured), contextlib.redirect_stdout(captured):
            yield
    except BaseException:
        sys.stderr.write(captured.getvalue()[-5000:])
        raise


@click.command()
@click.option("--images", default=64, show_default=True, help="Toy training images to generate.")
@click.option("--iters", default=40, show_default=True,
              help="Timed iterations per mode (a multiple of --warmup).")
@click.option("--warmup", default=20, show_default=True,
              help="Untimed iterations first, per mode; also the log period.")
@click.option("--teacher", "teacher_path", type=click.Path(dir_okay=False, exists=True),
              help="A toy teacher checkpoint; default: train one for --teacher-iters.")
@click.option("--teacher-iters", default=30, show_default=True,
              help="Iterations of the quick teacher when --teacher is not given.")
@click.option("--shard-size", default=16, show_default=True, help="Images per shard.")
@click.option("--workers", default=0, show_default=True,
              help="DataLoader workers (data.num_workers) in both modes.")
@click.option("--repeats", default=3, show_default=True,
              help="Alternating shards/online runs; the table shows the median.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--workdir", type=click.Path(file_okay=False),
              help="Keep data, teacher, shards and runs here (default: a temporary folder).")
def main(images, iters, warmup, teacher_path, teacher_iters, shard_size, workers, repeats, device,
         workdir):
    """Images/s of SAD training from teacher shards vs a live teacher, same student and batch.

    \b
    Generates toy data, trains a quick toy teacher (or takes --teacher), caches its scores
    with cache-logits, then trains pipelines/toy_student_sad.toml twice in this process:
    from the shards and online. Prints images/s, data time per step and the ratio
    shards / online (target >= 1.5x). Use OMP_NUM_THREADS to fix the thread count.
    \b
    Example:
      OMP_NUM_THREADS=1 python -m sadpipe.bench.train --images 64 --iters 40
    """
    if repeats < 1:
        raise click.BadParameter("must be at least 1", param_hint="--repeats")
    if warmup < 1 or iters < warmup or iters % warmup:
        raise click.BadParameter(f"must be a positive multiple of --warmup ({warmup})",
                                 param_hint="--iters")
    with contextlib.ExitStack() as stack:
        root = Path(workdir) if workdir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        click.echo(f"work folder {root}; torch threads {torch.get_num_threads()}; device {device}")
        split = generate_toy_dataset(root / "data", num_train=images, num_unlabeled=0,
                                     num_val=0)["splits"]["train"]
        annotations, image_dir = Path(split["annotation_file"]), Path(split["image_dir"])
        with quiet():
            teacher = Path(teacher_path) if teacher_path else quick_teacher(
                root, annotations, image_dir, iters=teacher_iters, device=device)
            totals = cache_shards(teacher, annotations, image_dir, root / "shards",
                                  shard_size=shard_size, device=device)
        click.echo(f"teacher {teacher}; {totals['samples']} images cached, "
                   f"{totals['payload_bytes_per_view'] / 1024:.0f} KiB per view, kept fraction per "
                   f"level {[round(k, 3) for k in totals['kept_fraction_per_level']]}")

        overrides = [*data_overrides(annotations, image_dir), f"train.device={json.dumps(device)}",
                     f"data.num_workers={workers}"]
        runs = []  # (shards, online) per repeat, alternating: the CPU may be shared
        for _ in range(repeats):
            with quiet():
                runs.append((time_mode("shards", root / "run_shards", overrides, warmup=warmup,
                                       iters=iters, teacher_shards=root / "shards"),
                             time_mode("online", root / "run_online", overrides, warmup=warmup,
                                       iters=iters, teacher_path=teacher)))
        ratios = [shard.images_per_s / online.images_per_s for shard, online in runs]
        rows = [median_timing([run[i] for run in runs]) for i in range(2)]
        cfg = load_config(STUDENT_CONFIG)
        click.echo(f"student {cfg['model']['arch']}, {cfg['solver']['images_per_batch']} images per "
                   f"batch, short side {cfg['input']['train_min_sizes'][0]}; {iters} timed "
                   f"iterations after {warmup} warm-up, each mode; median of {repeats} "
                   f"alternating repeats")
        click.echo(format_table(rows))
        ratio = statistics.median(ratios)
        verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
        click.echo(f"shards / online: {ratio:.2f}x median (repeats: "
                   f"{', '.join(f'{r:.2f}x' for r in ratios)}; target >= {TARGET_RATIO}x: {verdict})")


if __name__ == "__main__":
    main()
