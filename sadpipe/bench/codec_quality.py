"""Quality of the teacher-score codec on a real teacher (issue 4). A measurement, not a test::

    python -m sadpipe.bench.codec_quality --teacher runs/teacher/model_final.pt \\
        --student runs/student/model_final.pt --annotations data/annotations/val.json \\
        --images data/images/val --limit 100

For every view (orig and hflip) of the first ``--limit`` images, made exactly as
``sadpipe cache-logits`` makes them (sizes from ``--student-config``, else from the teacher
checkpoint), it runs the teacher for the dense scores ``q: (HWA, C)``, encodes and decodes
them with the shards codec, and compares the adaptive distillation loss (``cuda_ops``,
backend "torch", float64) and its gradient w.r.t. the student logits, decoded against dense
``q``, with the normaliser N of the dense scores (as the cache stores it). Two students are
judged on the same view: an untrained one (the student architecture freshly built, class
bias at prior 0.01) and the trained ``--student``.

Baselines run in the same process: dense fp16 / fp32 storage for the size, and for the
error, plain sparse storage of the same kept entries with the others dropped to 0 (what the
codec's stand-ins for the dropped scores buy).

``--compare-precision bf16`` (or fp16) also runs the teacher at that precision on every view
(``cache-logits --precision``) and measures it against the fp32 teacher's dense scores and
normaliser: "bf16 dense" (the teacher's precision alone) and "bf16 codec" (what a bf16 cache
stores and training reads, with the normaliser of its own scores), beside "codec" (the fp32
cache); plus how far its scores move (largest and mean |q_bf16 - q|, the share of scores that
cross the codec threshold, the normaliser's relative change).

Targets (issue 4): ADL within 0.5%, gradient cosine >= 0.999, payload >= 50x smaller than
dense fp16.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import click
import numpy as np
import torch

ADL_TARGET = 0.005        # |relative ADL error| per view
COSINE_TARGET = 0.999     # gradient cosine per view
RATIO_TARGET = 50.0       # dense fp16 bytes / payload bytes
STUDENTS = ("untrained", "trained")
DECODERS = ("codec", "drop-to-0")


@dataclass
class ViewResult:
    """Measurements of one view. errors: {(student, decoder): (relative ADL error, cosine)}."""

    entries: int                  # HWA * C
    payload_bytes: int            # the stored (packed) payload
    stored_bytes: int             # its share of the sample's scores member inside a tar
    kept_fraction: list
    errors: dict = field(default_factory=dict)
    score_change: dict | None = None   # --compare-precision: see :func:`score_change`


def view_prep(teacher, student_config, min_size, max_size):
    """The views' Preprocessing, as `sadpipe cache-logits` makes it from the same options."""
    from sadpipe.engine.cache_logits import student_cache_settings, view_preprocessing

    settings = student_cache_settings(student_config, min_size=min_size, max_size=max_size)
    return view_preprocessing(teacher, settings)


@torch.no_grad()
def student_logits(model, spec, image, recipe, prep) -> torch.Tensor:
    """Student class logits (HWA, C) float64 of one view, on the view's own padded grid; the
    pixels are normalised with the student's own mean/std, as training does."""
    from sadpipe.data.transforms import make_view

    own = spec.preprocessing.with_sizes_of(prep)
    x = make_view(image, recipe, own)
    ph, pw = recipe["padded_size"]
    batch = torch.zeros(1, 3, ph, pw)
    batch[0, :, :x.shape[1], :x.shape[2]] = x
    logits, _ = model(batch)
    return logits[0].double()


def adl_and_grad(logits: torch.Tensor, probs: torch.Tensor, normalizer: float):
    """ADL (float) and its gradient (HWA, C) w.r.t. float64 student logits (HWA, C)."""
    import cuda_ops
    from cuda_ops.constants import ADL_ALPHA, ADL_BETA, ADL_GAMMA

    x = logits.detach().clone().requires_grad_(True)
    loss = cuda_ops.adaptive_distillation_loss(x, probs, alpha=ADL_ALPHA, gamma=ADL_GAMMA,
                                               beta=ADL_BETA, normalizer=normalizer,
                                               backend="torch")
    loss.backward()
    return float(loss.detach()), x.grad


def normalizer_of(q: torch.Tensor) -> float:
    """The ADL normaliser max(Σ q^θ, 1) of float64 scores (what the cache stores)."""
    import cuda_ops
    from cuda_ops.constants import NORMALIZER_POWER

    return max(float(cuda_ops.power_sum(q, NORMALIZER_POWER, backend="torch")), 1.0)


def score_change(q: torch.Tensor, q_other: torch.Tensor, threshold: float) -> dict:
    """How far another precision's scores (HWA, C) move from the fp32 ones ``q`` (float64):
    largest and mean absolute change, the share of scores on the other side of the codec
    ``threshold``, and the normaliser's relative change."""
    diff = (q_other - q).abs()
    crossed = (q >= threshold) != (q_other >= threshold)
    return {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
            "crossed": float(crossed.double().mean()),
            "normalizer_rel": normalizer_of(q_other) / normalizer_of(q) - 1.0}


def measure_view(dense: np.ndarray, level_sizes, codec, logits: dict, *,
                 other: tuple[str, np.ndarray] | None = None) -> ViewResult:
    """dense: (HWA, C) float32 teacher scores; logits: {student: (HWA, C) float64}.
    other: (precision, its (HWA, C) scores) of the same teacher at another precision
    (``--compare-precision``), judged against ``dense``."""
    import shards
    from shards.sample import scores_member_bytes

    payload = codec.encode(dense, level_sizes)
    q = torch.from_numpy(dense).double()
    normalizer = normalizer_of(q)
    decoded = {"codec": (torch.from_numpy(codec.decode(payload)).double(), normalizer),
               "drop-to-0": (torch.where(q >= codec.threshold, q, torch.zeros_like(q)), normalizer)}
    change = None
    if other is not None:
        name, scores = other
        q_other = torch.from_numpy(scores).double()
        other_payload = codec.encode(scores, level_sizes)
        decoded[f"{name} dense"] = (q_other, normalizer_of(q_other))
        decoded[f"{name} codec"] = (torch.from_numpy(codec.decode(other_payload)).double(),
                                    normalizer_of(q_other))
        change = score_change(q, q_other, codec.threshold)
    payload_bytes = shards.payload_nbytes(payload)
    views_per_sample = 2  # orig + hflip share one scores member
    result = ViewResult(entries=dense.size, payload_bytes=payload_bytes,
                        stored_bytes=scores_member_bytes([payload_bytes] * views_per_sample)
                        / views_per_sample,
                        kept_fraction=shards.kept_fraction_per_level(payload), score_change=change)
    for student, x in logits.items():
        loss, grad = adl_and_grad(x, q, normalizer)
        for name, (q_hat, normalizer_hat) in decoded.items():
            loss_hat, grad_hat = adl_and_grad(x, q_hat, normalizer_hat)
            cosine = float(torch.nn.functional.cosine_similarity(grad.reshape(1, -1),
                                                                 grad_hat.reshape(1, -1)))
            result.errors[(student, name)] = ((loss_hat - loss) / loss, cosine)
    return result


def run_views(teacher, student, untrained, records, dataset, prep, codec, *, views, log,
              other_teacher=None):
    """ViewResult for every view of every readable record; ``other_teacher``: the same
    teacher at another precision (``--compare-precision``)."""
    from sadpipe.data.coco import ImageError
    from sadpipe.data.transforms import make_recipe
    from sadpipe.engine.cache_logits import VIEW_FLIPS

    layout = teacher.spec.anchor_layout
    results = []
    for i, record in enumerate(records):
        try:
            image = np.asarray(dataset.load_image(record))
        except ImageError as err:
            log(f"skipped: {err}")
            continue
        for name in views:
            recipe = make_recipe(prep, image.shape[0], image.shape[1], flip=VIEW_FLIPS[name])
            dense = teacher.views_probs([image], [recipe], prep)[0].numpy()
            logits = {"untrained": student_logits(*untrained, image, recipe, prep),
                      "trained": student_logits(*student, image, recipe, prep)}
            sizes = layout.level_sizes(tuple(recipe["padded_size"]))
            other = None
            if other_teacher is not None:
                other = (other_teacher.precision,
                         other_teacher.views_probs([image], [recipe], prep)[0].numpy())
            results.append(measure_view(dense, sizes, codec, logits, other=other))
        if (i + 1) % 20 == 0:
            log(f"{i + 1}/{len(records)} images")
    return results


def report_lines(results: list[ViewResult]) -> list[str]:
    """The table: errors per student and decoder, sizes against dense, kept per level."""
    decoders = list(dict.fromkeys(name for _, name in results[0].errors))
    lines = [f"{'student':<10} {'scores':<10} {'|ADL rel err| max':>17} {'mean':>9} "
             f"{'signed mean':>12} {'grad cos min':>13} {'mean':>9}"]
    for student in STUDENTS:
        for name in decoders:
            errs = np.array([r.errors[(student, name)][0] for r in results])
            cos = np.array([r.errors[(student, name)][1] for r in results])
            lines.append(f"{student:<10} {name:<10} {np.abs(errs).max():>16.4%} "
                         f"{np.abs(errs).mean():>9.4%} {errs.mean():>+12.4%} "
                         f"{cos.min():>13.6f} {cos.mean():>9.6f}")
    payload = np.array([r.payload_bytes for r in results], np.float64)
    stored = np.array([r.stored_bytes for r in results], np.float64)
    fp16 = np.array([2 * r.entries for r in results], np.float64)
    lines += ["", f"{'bytes per view':<22} {'mean':>10} {'min':>10} {'max':>10} "
                  f"{'fp16 / this':>12} {'fp32 / this':>12}"]
    for name, b in (("codec payload", payload), ("payload as stored", stored),
                    ("dense fp16", fp16), ("dense fp32", 2 * fp16)):
        lines.append(f"{name:<22} {b.mean():>10,.0f} {b.min():>10,.0f} {b.max():>10,.0f} "
                     f"{fp16.sum() / b.sum():>11.1f}x {2 * fp16.sum() / b.sum():>11.1f}x")
    kept = np.array([r.kept_fraction for r in results]).mean(axis=0)
    lines += ["", "kept fraction per level: " + "  ".join(f"P{3 + i} {100 * k:.3f}%"
                                                       for i, k in enumerate(kept))]
    return lines + precision_lines(results)


def precision_lines(results: list[ViewResult]) -> list[str]:
    """With --compare-precision: how far the other precision's scores move from fp32's."""
    changes = [r.score_change for r in results if r.score_change is not None]
    if not changes:
        return []

    def worst(key):
        return max(abs(c[key]) for c in changes)

    def mean(key):
        return float(np.mean([abs(c[key]) for c in changes]))

    return ["", f"{'scores vs fp32 teacher':<26} {'worst view':>11} {'mean':>11}",
            f"{'|q - q_fp32| max':<26} {worst('max_abs'):>11.2e} {mean('max_abs'):>11.2e}",
            f"{'|q - q_fp32| mean':<26} {worst('mean_abs'):>11.2e} {mean('mean_abs'):>11.2e}",
            f"{'crossing the threshold':<26} {worst('crossed'):>11.4%} {mean('crossed'):>11.4%}",
            f"{'|normaliser rel change|':<26} {worst('normalizer_rel'):>11.4%} "
            f"{mean('normalizer_rel'):>11.4%}"]


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _worst(results: list[ViewResult], decoder: str) -> tuple[float, float]:
    """(worst |ADL rel error|, worst gradient cosine) of a decoder over views and students."""
    return (max(abs(r.errors[(s, decoder)][0]) for r in results for s in STUDENTS),
            min(r.errors[(s, decoder)][1] for r in results for s in STUDENTS))


def verdict_lines(results: list[ViewResult]) -> list[str]:
    worst_err, worst_cos = _worst(results, "codec")
    ratio = sum(2 * r.entries for r in results) / sum(r.payload_bytes for r in results)
    stored = sum(2 * r.entries for r in results) / sum(r.stored_bytes for r in results)
    lines = [f"target |ADL rel err| <= {ADL_TARGET:.1%} on every view: "
             f"{_met(worst_err <= ADL_TARGET)} (worst {worst_err:.4%})",
             f"target grad cosine >= {COSINE_TARGET} on every view: "
             f"{_met(worst_cos >= COSINE_TARGET)} (worst {worst_cos:.6f})",
             f"target payload >= {RATIO_TARGET:.0f}x smaller than dense fp16: "
             f"{_met(ratio >= RATIO_TARGET)} ({ratio:.1f}x; {stored:.1f}x as stored: with the "
             f"npy/tar overhead of the scores member, two views per image)"]
    others = [name for _, name in results[0].errors if name.endswith(" codec")]
    for name in dict.fromkeys(others):
        err, cos = _worst(results, name)
        lines.append(f"{name.split()[0]} cache against the fp32 teacher: |ADL rel err| <= "
                     f"{ADL_TARGET:.1%} {_met(err <= ADL_TARGET)} (worst {err:.4%}; the fp32 cache "
                     f"{worst_err:.4%}), grad cosine >= {COSINE_TARGET} {_met(cos >= COSINE_TARGET)} "
                     f"(worst {cos:.6f}; the fp32 cache {worst_cos:.6f})")
    return lines


@click.command(name="codec_quality")
@click.option("--teacher", "teacher_path", required=True, type=click.Path(dir_okay=False),
              help="Teacher checkpoint (sadpipe format), e.g. runs/teacher/model_final.pt.")
@click.option("--student", "student_path", required=True, type=click.Path(dir_okay=False),
              help="Trained student checkpoint; its architecture, freshly built, is the "
                   "untrained student.")
@click.option("--annotations", required=True, type=click.Path(dir_okay=False),
              help="COCO json of the images to measure on (e.g. the val split).")
@click.option("--images", "images_dir", required=True, type=click.Path(file_okay=False),
              help="Folder the json's file names are relative to.")
@click.option("--student-config", type=click.Path(dir_okay=False),
              help="Student train config: view sizes and normalisation as in cache-logits "
                   "(default: the teacher checkpoint's sizes).")
@click.option("--min-size", type=int, help="Short side of the views (overrides the config).")
@click.option("--max-size", type=int, help="Long-side cap of the views (overrides the config).")
@click.option("--views", default="orig,hflip", show_default=True, help="Views per image.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N images (id order).")
@click.option("--threshold", type=float,
              help="Codec threshold to try (default: the codec's own, what cache-logits uses).")
@click.option("--value-bits", type=click.IntRange(8, 16),
              help="Bits per kept score's logit code to try (default: the codec's own).")
@click.option("--compare-precision", type=click.Choice(("bf16", "fp16")),
              help="Also run the teacher at this precision (cache-logits --precision) and measure "
                   "its scores, and the cache of them, against the fp32 teacher's.")
@click.option("--seed", default=0, show_default=True, help="Seed of the untrained student.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1),
              help="torch CPU threads.")
def command(teacher_path, student_path, annotations, images_dir, student_config, min_size,
            max_size, views, limit, threshold, value_bits, compare_precision, seed, threads):
    """Measure how the teacher-score codec changes the adaptive distillation loss and its
    gradient on real teacher outputs, and how small it makes each view (issue 4)."""
    import shards
    from sadpipe.checkpoint import load_model
    from sadpipe.data.coco import CocoDataset
    from sadpipe.engine.cache_logits import VIEW_FLIPS
    from sadpipe.engine.teacher import Teacher, check_teacher_compatible
    from sadpipe.errors import UserError

    torch.set_num_threads(threads)
    views = tuple(v.strip() for v in views.split(",") if v.strip())
    if not views or any(v not in VIEW_FLIPS for v in views):
        raise UserError(f"--views: expected a list of {', '.join(VIEW_FLIPS)}, got '{views}'")
    teacher = Teacher(teacher_path)
    other_teacher = Teacher(teacher_path, precision=compare_precision) if compare_precision else None
    model, spec = load_model(student_path)
    check_teacher_compatible(teacher.spec, spec, source=student_path)
    torch.manual_seed(seed)
    untrained = spec.build().eval()
    dataset = CocoDataset(annotations, images_dir)
    prep = view_prep(teacher, student_config, min_size, max_size)
    settings = {k: v for k, v in (("threshold", threshold), ("value_bits", value_bits))
                if v is not None}
    try:
        codec = shards.SparseCodec(**settings)
    except shards.CodecError as err:
        raise UserError(f"--threshold/--value-bits: {err}") from None
    records = dataset.records[:limit]
    click.echo(f"codec_quality: teacher {teacher_path} ({teacher.spec.arch}), student "
               f"{student_path} ({spec.arch}); {len(records)} images x {len(views)} views "
               f"({', '.join(views)}) at min_size {prep.min_size}, max_size {prep.max_size}; "
               f"codec {codec.params}"
               + (f"; teacher also at {compare_precision}" if compare_precision else ""))
    results = run_views(teacher, (model, spec), (untrained, spec), records, dataset, prep,
                        codec, views=views, log=lambda m: click.echo(f"  {m}", err=True),
                        other_teacher=other_teacher)
    if not results:
        raise UserError(f"{annotations}: no readable images to measure")
    entries = [r.entries for r in results]
    click.echo(f"{len(results)} views, {min(entries):,} to {max(entries):,} scores "
               f"(anchors x classes) per view\n")
    for line in report_lines(results) + [""] + verdict_lines(results):
        click.echo(line)


if __name__ == "__main__":
    command()
