"""What the teacher cache costs: the same SAD student from the shards and from the live
teacher. A measurement, not a test::

    python -m sadpipe.bench.fidelity --workdir work/demo [--seeds 0,1,2] [--modes cached,online]
    python -m sadpipe.bench.fidelity --workdir work/demo --batch-check 200

Takes a finished ``sadpipe demo`` (or ``sadpipe run toy_sad``) folder: its data, pseudo-labels,
both caches and the teacher they were cached from (the manifest's command names it; or
``--teacher``). For each seed it trains the demo's distilled student
(``pipelines/toy_student_sad.toml``, the demo's schedule) on the same batches read from the
shards twice:

* ``cached``: the cached scores (what ``sadpipe demo`` trains on);
* ``live``: the same batches rescored by the live teacher (``train --teacher`` with the shards:
  each view as ``cache-logits`` ran it, without the codec);
* ``online``: distilled online from the COCO files (``train --teacher`` alone): the same seed
  and schedule, but its own batch order.

``--modes`` picks them (default ``cached,online``: the paired difference a user cares about).
Each is evaluated on the demo's val; the table gives AP per seed, each difference to
``cached`` per seed, and per difference its mean over seeds with a 95 % interval (Student's
t). One 800-iteration run of the toy student moves by ~0.5-1 AP when anything changes at all
(a different seed, or teacher scores that differ in the fourth digit), so read the mean.

``--batch-check N`` instead compares targets, not trained students: N batches of the demo's
distilled student's own training stream (its resolved config, read from the caches), and
for each the ADL and its gradient w.r.t. the logits of the demo's trained distilled student,
from the cached targets and from the live teacher on the same batch as ``train --teacher``
runs it. It prints one line per batch and ends with
``batches=N min_cosine=X max_rel_adl_error=Y`` (Y as a fraction).
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
# Student's t quantile t(0.975, df) for a 95 % interval of a mean over df + 1 seeds
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131}
NORMAL_975 = 1.960


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
    if "--teacher" not in argv[:-1]:
        raise UserError(f"{shard_dir / 'manifest.json'}: its command names no --teacher; pass "
                        "--teacher (the checkpoint the caches were made with)")
    return argv[argv.index("--teacher") + 1]


def train_mode(mode: str, out: Path, paths: dict, teacher_path: str, *, seed: int, iters: int,
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
        sources["teacher_path"] = teacher_path
    if (out / FINAL_MODEL).exists():  # kept from an earlier run of this benchmark
        return out / FINAL_MODEL
    with quiet():
        return train(load_config(STUDENT_CONFIG, overrides), out, **sources).final_model


def format_table(ap: dict, seeds: list[int], modes: list[str]) -> str:
    """ap: {(mode, seed): AP %}. Per seed each mode's AP and cached - mode; then means and, per
    difference, its 95 % interval over seeds."""
    others = [m for m in modes if m != "cached"] if "cached" in modes else []
    lines = [f"{'seed':<6}" + "".join(f"{m + ' AP':>12}" for m in modes)
             + "".join(f"{'cached - ' + m:>17}" for m in others)]
    for seed in seeds:
        lines.append(f"{seed:<6}" + "".join(f"{ap[m, seed]:>12.2f}" for m in modes)
                     + "".join(f"{ap['cached', seed] - ap[m, seed]:>+17.2f}" for m in others))
    means = {m: statistics.mean(ap[m, s] for s in seeds) for m in modes}
    lines.append(f"{'mean':<6}" + "".join(f"{means[m]:>12.2f}" for m in modes)
                 + "".join(f"{means['cached'] - means[m]:>+17.2f}" for m in others))
    for m in others:
        diffs = [ap["cached", s] - ap[m, s] for s in seeds]
        lines.append(paired_summary(f"cached - {m}", diffs))
    return "\n".join(lines)


def paired_summary(name: str, diffs: list[float]) -> str:
    """Mean of paired differences with its 95 % interval (Student's t over the seeds)."""
    mean = statistics.mean(diffs)
    if len(diffs) < 2:
        return f"paired difference {name}: {mean:+.2f} AP (one seed: no interval)"
    sd = statistics.stdev(diffs)
    half = T_975.get(len(diffs) - 1, NORMAL_975) * sd / len(diffs) ** 0.5
    return (f"paired difference {name}: mean {mean:+.2f} AP, 95 % interval [{mean - half:+.2f}, "
            f"{mean + half:+.2f}], sd {sd:.2f} over {len(diffs)} seeds")


def batch_check(workdir: Path, num_batches: int, teacher_path: str, log) -> tuple[float, float]:
    """(min cosine, max |relative ADL error|) of cached vs live targets over ``num_batches``
    batches of the demo's distilled student's training stream (see the module docstring)."""
    import torch

    from sadpipe.checkpoint import load_model
    from sadpipe.engine.distributed import DistInfo
    from sadpipe.engine.settings import DistillSettings
    from sadpipe.engine.streams import LABELED, PSEUDO, open_stream, training_sources
    from sadpipe.engine.teacher import Teacher
    from sadpipe.engine.trainer import teacher_targets
    from sadpipe.modeling.distill import adaptive_distillation_loss
    from sadpipe.modeling.targets import IGNORE, build_targets

    paths = demo_paths(workdir)
    run = workdir / "student_sad"
    cfg = load_config(run / "config.toml")
    model, spec = load_model(run / FINAL_MODEL)
    model.eval()
    teacher = Teacher(teacher_path)
    sources = training_sources(cfg["data"], {LABELED: paths["labeled_shards"],
                                             PSEUDO: paths["pseudo_shards"]}, distill=True)
    distill = DistillSettings.from_config(cfg)
    pattern = [name for name in distill.pattern if name in sources]
    batches = {name: open_stream(name, sources[name], spec, cfg, DistInfo(), start_batch=0)
               for name in set(pattern)}
    worst_cosine, worst_error = 1.0, 0.0
    for i in range(num_batches):
        name = pattern[i % len(pattern)]
        batch = next(batches[name])
        images = batch["images"]
        with torch.no_grad():
            logits, _ = model(images)
        anchors = spec.anchor_layout.anchors(tuple(images.shape[-2:]))
        labels, _ = build_targets(anchors, batch["targets"], convention=spec.boxes)
        results = []
        for live in (None, teacher):
            probs, mask, normalizer = teacher_targets(batch, images, spec, "cpu", teacher=live,
                                                      power=distill.normalizer_power)
            x = logits.detach().clone().requires_grad_(True)
            adl_labels = torch.where(mask, labels, torch.full_like(labels, IGNORE))
            loss = adaptive_distillation_loss(x, probs, adl_labels, max(normalizer, 1.0),
                                              alpha=distill.alpha, gamma=distill.gamma,
                                              beta=distill.beta, temperature=distill.temperature)
            loss.backward()
            results.append((float(loss.detach()), x.grad.reshape(-1).double()))
        (cached_loss, cached_grad), (live_loss, live_grad) = results
        cosine = float(torch.nn.functional.cosine_similarity(cached_grad, live_grad, dim=0))
        error = abs(cached_loss - live_loss) / abs(live_loss)
        worst_cosine, worst_error = min(worst_cosine, cosine), max(worst_error, error)
        log(f"  batch {i + 1} ({name}, {tuple(images.shape[-2:])}): ADL cached {cached_loss:.5f} "
            f"live {live_loss:.5f} (rel. error {error:.4%}), gradient cosine {cosine:.6f}")
    return worst_cosine, worst_error


@click.command()
@click.option("--workdir", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True,
              help="A finished `sadpipe demo` folder (data, pseudo-labels, both caches).")
@click.option("--teacher", "teacher_path", type=click.Path(dir_okay=False, exists=True),
              help="The teacher the caches were made with (default: the one their manifest names).")
@click.option("--seeds", default="0,1,2", show_default=True, help="Training seeds, comma-separated.")
@click.option("--modes", default="cached,online", show_default=True,
              help="Which students to train per seed: cached (from the shards), live (the "
                   "shards' batches rescored by the live teacher), online (live teacher, COCO "
                   "files).")
@click.option("--iters", default=800, show_default=True, help="Iterations per run (the demo's).")
@click.option("--steps", default="600,720", show_default=True, help="LR steps (the demo's).")
@click.option("--batch-check", "check_batches", type=click.IntRange(min=1),
              help="Instead of training: compare cached and live targets on this many batches "
                   "of the demo's distilled student's training stream.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the runs here (default: WORKDIR/fidelity); finished runs are reused.")
def main(workdir, teacher_path, seeds, modes, iters, steps, check_batches, out):
    """AP of the demo's SAD student trained from the cache, rescored by the live teacher on
    the same batches, and distilled online, per seed; or (--batch-check) the ADL targets of
    cache and live teacher compared batch by batch.

    \b
    Examples (after `sadpipe demo --workdir work/demo`):
      python -m sadpipe.bench.fidelity --workdir work/demo --seeds 0,1,2,3,4,5
      python -m sadpipe.bench.fidelity --workdir work/demo --batch-check 200
    """
    paths = demo_paths(workdir)
    teacher_path = teacher_path or cached_teacher(paths["labeled_shards"])
    if check_batches:
        cosine, error = batch_check(workdir, check_batches, teacher_path, click.echo)
        click.echo(f"batches={check_batches} min_cosine={cosine:.6f} max_rel_adl_error={error:.6f}")
        return
    seed_list = [int(s) for s in seeds.split(",")]
    step_list = [int(s) for s in steps.split(",")]
    mode_list = [m.strip() for m in modes.split(",") if m.strip()]
    if not mode_list or any(m not in MODES for m in mode_list):
        raise UserError(f"--modes: expected some of {', '.join(MODES)}, got '{modes}'")
    out = out or workdir / "fidelity"
    click.echo(f"demo {workdir}; teacher {teacher_path}; {iters} iterations, steps {step_list}; "
               f"seeds {seed_list}; modes {mode_list}")
    ap = {}
    for seed in seed_list:
        for mode in mode_list:
            model = train_mode(mode, out / f"{mode}_seed{seed}", paths, teacher_path, seed=seed,
                               iters=iters, steps=step_list)
            metrics = evaluate_checkpoint(model, paths["val_annotations"], paths["val_images"])
            ap[mode, seed] = 100 * metrics["bbox"]["AP"]
            click.echo(f"  seed {seed} {mode}: AP {ap[mode, seed]:.2f}")
    click.echo(format_table(ap, seed_list, mode_list))


if __name__ == "__main__":
    main()
