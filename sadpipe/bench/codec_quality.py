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


def measure_view(dense: np.ndarray, level_sizes, codec, logits: dict) -> ViewResult:
    """dense: (HWA, C) float32 teacher scores; logits: {student: (HWA, C) float64}."""
    import cuda_ops
    import shards
    from cuda_ops.constants import NORMALIZER_POWER
    from shards.sample import scores_member_bytes

    payload = codec.encode(dense, level_sizes)
    q = torch.from_numpy(dense).double()
    decoded = {"codec": torch.from_numpy(codec.decode(payload)).double(),
               "drop-to-0": torch.where(q >= codec.threshold, q, torch.zeros_like(q))}
    normalizer = max(float(cuda_ops.power_sum(q, NORMALIZER_POWER, backend="torch")), 1.0)
    payload_bytes = shards.payload_nbytes(payload)
    views_per_sample = 2  # orig + hflip share one scores member
    result = ViewResult(entries=dense.size, payload_bytes=payload_bytes,
                        stored_bytes=scores_member_bytes([payload_bytes] * views_per_sample)
                        / views_per_sample,
                        kept_fraction=shards.kept_fraction_per_level(payload))
    for student, x in logits.items():
        loss, grad = adl_and_grad(x, q, normalizer)
        for name, q_hat in decoded.items():
            loss_hat, grad_hat = adl_and_grad(x, q_hat, normalizer)
            cosine = float(torch.nn.functional.cosine_similarity(grad.reshape(1, -1),
                                                                 grad_hat.reshape(1, -1)))
            result.errors[(student, name)] = ((loss_hat - loss) / loss, cosine)
    return result


def run_views(teacher, student, untrained, records, dataset, prep, codec, *, views, log):
    """ViewResult for every view of every readable record."""
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
            results.append(measure_view(dense, sizes, codec, logits))
        if (i + 1) % 20 == 0:
            log(f"{i + 1}/{len(records)} images")
    return results


def report_lines(results: list[ViewResult]) -> list[str]:
    """The table: errors per student and decoder, sizes against dense, kept per level."""
    lines = [f"{'student':<10} {'scores':<10} {'|ADL rel err| max':>17} {'mean':>9} "
             f"{'signed mean':>12} {'grad cos min':>13} {'mean':>9}"]
    for student in STUDENTS:
        for name in DECODERS:
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
    return lines


def verdict_lines(results: list[ViewResult]) -> list[str]:
    worst_err = max(abs(r.errors[(s, "codec")][0]) for r in results for s in STUDENTS)
    worst_cos = min(r.errors[(s, "codec")][1] for r in results for s in STUDENTS)
    ratio = sum(2 * r.entries for r in results) / sum(r.payload_bytes for r in results)
    stored = sum(2 * r.entries for r in results) / sum(r.stored_bytes for r in results)

    def met(ok):
        return "met" if ok else "NOT met"

    return [f"target |ADL rel err| <= {ADL_TARGET:.1%} on every view: "
            f"{met(worst_err <= ADL_TARGET)} (worst {worst_err:.4%})",
            f"target grad cosine >= {COSINE_TARGET} on every view: "
            f"{met(worst_cos >= COSINE_TARGET)} (worst {worst_cos:.6f})",
            f"target payload >= {RATIO_TARGET:.0f}x smaller than dense fp16: "
            f"{met(ratio >= RATIO_TARGET)} ({ratio:.1f}x; {stored:.1f}x as stored: with the "
            f"npy/tar overhead of the scores member, two views per image)"]


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
@click.option("--seed", default=0, show_default=True, help="Seed of the untrained student.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1),
              help="torch CPU threads.")
def command(teacher_path, student_path, annotations, images_dir, student_config, min_size,
            max_size, views, limit, threshold, value_bits, seed, threads):
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
               f"codec {codec.params}")
    results = run_views(teacher, (model, spec), (untrained, spec), records, dataset, prep,
                        codec, views=views, log=lambda m: click.echo(f"  {m}", err=True))
    if not results:
        raise UserError(f"{annotations}: no readable images to measure")
    entries = [r.entries for r in results]
    click.echo(f"{len(results)} views, {min(entries):,} to {max(entries):,} scores "
               f"(anchors x classes) per view\n")
    for line in report_lines(results) + [""] + verdict_lines(results):
        click.echo(line)


if __name__ == "__main__":
    command()
