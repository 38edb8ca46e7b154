"""What the teacher cache costs in accuracy: the same SAD student from the shards and from the
live teacher (issue 10's fidelity). A measurement, not a test::

    python -m sadpipe.bench.fidelity --workdir work/demo [--seeds 0 1 2] [--online]

Takes a finished ``sadpipe demo`` (or ``sadpipe run toy_sad``) folder: its data, pseudo-labels,
both caches and the teacher they were cached from (the manifest's command names it; or
``--teacher``). For each seed it trains the demo's distilled student
(``pipelines/toy_student_sad.toml``, the demo's schedule) on the same batches read from the
shards twice:

* ``cached``: the cached scores (what ``sadpipe demo`` trains on);
* ``live``: the same batches rescored by the live teacher (``train --teacher`` with the shards:
  each view as ``cache-logits`` ran it, without the codec);
* ``online`` (``--online``): distilled online from the COCO files (``train --teacher``
  alone): the same seed and schedule, but its own batch order.

Each is evaluated on the demo's val; the table gives AP per seed, ``cached - live`` per seed
(the codec's cost, nothing else differs) and the means over seeds. One 800-iteration run of
the toy student moves by ~0.5 AP when anything changes at all (a different seed, or teacher
scores that differ in the fourth digit), so read the mean over several seeds.
"""
from __future__ import annotations

import json
import shlex
import statistics
from pathlib import Path

import click

from sadpipe.bench.train import quiet
from sadpipe.config import load_config
from sadpipe.engine.publish import evaluate_checkpoint
from sadpipe.engine.run_dir import FINAL_MODEL
from sadpipe.engine.trainer import train
from sadpipe.errors import UserError
from sadpipe.pipeline.shipped import SHIPPED_DIR

STUDENT_CONFIG = SHIPPED_DIR / "toy_student_sad.toml"
MODES = ("cached", "live", "online")


def demo_paths(workdir: Path) -> dict:
    """The files of a finished demo folder that the runs need."""
    paths = {"train_annotations": workdir / "data/annotations/train.json",
             "train_images": workdir / "data/images/train",
             "val_annotations": workdir / "data/annotations/val.json",
             "val_images": workdir / "data/images/val",
             "pseudo_annotations": workdir / "pseudo/pseudo.json",
             "pseudo_images": workdir / "data/images",
             "labeled_shards": workdir / "cache/labeled", "pseudo_shards": workdir / "cache/pseudo"}
    for name, path in paths.items():
        if not path.exists():
            raise UserError(f"{path}: missing ({name}); run `sadpipe demo --workdir {workdir}` first")
    return paths


def cached_teacher(shard_dir: Path) -> str:
    """The --teacher of the cache-logits command that wrote ``shard_dir``."""
    argv = shlex.split(json.loads((shard_dir / "manifest.json").read_text())["command"])
    return argv[argv.index("--teacher") + 1]


def train_mode(mode: str, out: Path, paths: dict, teacher: str, *, seed: int, iters: int,
               steps: list[int]) -> Path:
    overrides = [f"data.train_annotations={json.dumps(str(paths['train_annotations']))}",
                 f"data.train_images={json.dumps(str(paths['train_images']))}",
                 f"train.seed={seed}", f"solver.max_iter={iters}", f"solver.steps={steps}"]
    sources = {"teacher_shards": paths["labeled_shards"], "pseudo_shards": paths["pseudo_shards"]}
    if mode == "online":
        overrides += [f"data.pseudo_annotations={json.dumps(str(paths['pseudo_annotations']))}",
                      f"data.pseudo_images={json.dumps(str(paths['pseudo_images']))}"]
        sources = {}
    if mode != "cached":
        sources["teacher"] = teacher
    if (out / FINAL_MODEL).exists():  # kept from an earlier run of this benchmark
        return out / FINAL_MODEL
    with quiet():
        return train(load_config(STUDENT_CONFIG, overrides), out, **sources).final_model


def format_table(ap: dict, seeds: list[int], modes: list[str]) -> str:
    """ap: {(mode, seed): AP %}."""
    lines = [f"{'seed':<6}" + "".join(f"{m + ' AP':>12}" for m in modes) + f"{'cached - live':>15}"]
    for seed in seeds:
        lines.append(f"{seed:<6}" + "".join(f"{ap[m, seed]:>12.2f}" for m in modes)
                     + f"{ap['cached', seed] - ap['live', seed]:>+15.2f}")
    means = {m: statistics.mean(ap[m, s] for s in seeds) for m in modes}
    diffs = [ap["cached", s] - ap["live", s] for s in seeds]
    lines.append(f"{'mean':<6}" + "".join(f"{means[m]:>12.2f}" for m in modes)
                 + f"{statistics.mean(diffs):>+15.2f}")
    if len(seeds) > 1:
        lines.append(f"paired difference cached - live: mean {statistics.mean(diffs):+.2f} AP, "
                     f"sd {statistics.stdev(diffs):.2f}, standard error "
                     f"{statistics.stdev(diffs) / len(diffs) ** 0.5:.2f} over {len(diffs)} seeds")
    return "\n".join(lines)


@click.command()
@click.option("--workdir", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True,
              help="A finished `sadpipe demo` folder (data, pseudo-labels, both caches).")
@click.option("--teacher", "teacher_ckpt", type=click.Path(dir_okay=False, exists=True),
              help="The teacher the caches were made with (default: the one their manifest names).")
@click.option("--seeds", default="0,1,2", show_default=True, help="Training seeds, comma-separated.")
@click.option("--iters", default=800, show_default=True, help="Iterations per run (the demo's).")
@click.option("--steps", default="600,720", show_default=True, help="LR steps (the demo's).")
@click.option("--online", is_flag=True, help="Also distil online from the COCO files.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the runs here (default: WORKDIR/fidelity); finished runs are reused.")
def main(workdir, teacher_ckpt, seeds, iters, steps, online, out):
    """AP of the demo's SAD student trained from the cache vs rescored by the live teacher on
    the same batches (and distilled online with --online), per seed.

    \b
    Example (after `sadpipe demo --workdir work/demo`):
      python -m sadpipe.bench.fidelity --workdir work/demo --seeds 0,1,2
    """
    paths = demo_paths(workdir)
    teacher = teacher_ckpt or cached_teacher(paths["labeled_shards"])
    seed_list = [int(s) for s in seeds.split(",")]
    step_list = [int(s) for s in steps.split(",")]
    modes = list(MODES if online else MODES[:2])
    out = out or workdir / "fidelity"
    click.echo(f"demo {workdir}; teacher {teacher}; {iters} iterations, steps {step_list}; "
               f"seeds {seed_list}; modes {modes}")
    ap = {}
    for seed in seed_list:
        for mode in modes:
            model = train_mode(mode, out / f"{mode}_seed{seed}", paths, teacher, seed=seed,
                               iters=iters, steps=step_list)
            metrics = evaluate_checkpoint(model, paths["val_annotations"], paths["val_images"])
            ap[mode, seed] = 100 * metrics["bbox"]["AP"]
            click.echo(f"  seed {seed} {mode}: AP {ap[mode, seed]:.2f}")
    click.echo(format_table(ap, seed_list, modes))


if __name__ == "__main__":
    main()
