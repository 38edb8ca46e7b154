"""``sadpipe pseudo-label``: the teacher labels unlabeled images (COCO dataset format)."""
from __future__ import annotations

from pathlib import Path

import click

from cuda_ops.constants import (
    FAINT_FLOOR,
    FP32,
    PRECISIONS,
    PSEUDO_LABEL_BATCH_SIZE,
    PSEUDO_LABEL_SCORE_THRESH,
)

HELP = f"""Run a teacher checkpoint on unlabeled images and keep its confident boxes as
labels: the pseudo-labeled set that `sadpipe train` distils a student on.

\b
Writes --out, a COCO dataset-format json that `sadpipe train` and `cache-logits` read:
  images       images with at least one box scoring >= --score-thresh
               (the others are left out and counted in the summary)
  annotations  id, image_id, category_id, bbox [x, y, w, h] in original pixels,
               area, iscrowd 0, and the teacher's score
  categories   the teacher checkpoint's
  info         images_root, score_thresh, teacher_sha256, teacher_precision,
               unlabeled_id_offset, images left out and images skipped
The file appears only when complete; an interrupted run leaves nothing, and running the
same command again starts over. The same inputs give byte-identical output.

\b
--draw N also writes, after --out, a drawings/ folder next to it: N of the unlabeled
images (chosen by --draw-seed), <image id>.png, with the teacher's boxes: those kept as
pseudo-labels solid and labelled "class score", those scoring from {FAINT_FLOOR:g} up to
--score-thresh faint and dashed. A look at them says what the student will be taught.

\b
Images: without --image-info every .jpg/.jpeg/.png/.bmp/.webp file under --images
(recursively) is labeled, sorted by path, with ids 1..N in that order. With --image-info
(e.g. COCO's image_info_unlabeled2017.json) its images, ids and sizes are used. An image
that is missing or cannot be decoded is skipped and listed; the run goes on.

\b
--merge-with adds a labeled set (its images and ground truth) to the output: the
paper's pseudo-labeled set, train + unlabeled. Its categories must be the teacher's.
Labeled images and annotations keep their ids (ground truth gets score 1.0); unlabeled
image ids are shifted by one constant so they start right above the largest labeled id
(info.unlabeled_id_offset; original id = id - offset). File names become relative to the
deepest folder holding both image folders: pass that folder (printed at the end) as the
images folder of later stages.

\b
Examples:
  sadpipe pseudo-label --teacher runs/teacher/model_final.pt \\
      --images data/images/unlabeled --out data/annotations/pseudo.json
  sadpipe pseudo-label --teacher runs/teacher/model_final.pt \\
      --images data/images/unlabeled --image-info data/annotations/unlabeled.json \\
      --merge-with data/annotations/train.json --merge-images data/images/train \\
      --out data/annotations/train_pseudo.json      # images root: data/images

\b
Several processes: torchrun --nproc_per_node=K -m sadpipe.cli pseudo-label ...
splits the images across processes; the output is the same as with one process.
"""


@click.command(name="pseudo-label", help=HELP,
               short_help="Teacher boxes on unlabeled images, as a COCO dataset.")
@click.option("--teacher", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Teacher checkpoint (.pt) written by `sadpipe train` or "
                   "`sadpipe import-torchvision`.")
@click.option("--images", "images_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Folder of the unlabeled images.")
@click.option("--image-info", type=click.Path(dir_okay=False, path_type=Path),
              help="COCO json listing the images to label (ids, file names relative to "
                   "--images, sizes). Default: every image file under --images.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output COCO json, e.g. data/annotations/pseudo.json.")
@click.option("--score-thresh", type=click.FloatRange(0.0, 1.0), default=PSEUDO_LABEL_SCORE_THRESH,
              show_default=True, help="Keep teacher boxes scoring at least this.")
@click.option("--merge-with", type=click.Path(dir_okay=False, path_type=Path),
              help="Labeled COCO json to merge into the output (needs --merge-images).")
@click.option("--merge-images", type=click.Path(file_okay=False, path_type=Path),
              help="Images folder of --merge-with.")
@click.option("--batch-size", type=click.IntRange(min=1), default=PSEUDO_LABEL_BATCH_SIZE,
              show_default=True, help="Images per teacher forward pass.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, help="Where the teacher runs (auto: cuda when available).")
@click.option("--precision", type=click.Choice(PRECISIONS), default=FP32, show_default=True,
              help="The teacher network's precision: fp32, or autocast to bf16 / fp16 (faster "
                   "on tensor-core GPUs; README, Mixed precision).")
@click.option("--draw", type=click.IntRange(min=0), default=0, show_default=True,
              metavar="N",
              help="Also draw N unlabeled images with the teacher's boxes (kept ones solid, "
                   "weaker ones faint) as PNGs in a drawings/ folder next to --out. "
                   "0: draw nothing.")
@click.option("--draw-seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Which images --draw picks: the same seed picks the same images.")
@click.option("--quiet", is_flag=True, help="Print no progress and no summary.")
@click.pass_context
def command(ctx, teacher, images_dir, image_info, out, score_thresh, merge_with,
            merge_images, batch_size, device, precision, draw, draw_seed, quiet):
    if (merge_with is None) != (merge_images is None):
        raise click.UsageError("--merge-with and --merge-images go together", ctx=ctx)
    if not draw and (ctx.get_parameter_source("draw_seed")
                     == click.core.ParameterSource.COMMANDLINE):
        raise click.UsageError("--draw-seed: only used with --draw N (N > 0)", ctx=ctx)
    from sadpipe.engine.pseudo_label import pseudo_label  # imports torch: only when needed

    summary = pseudo_label(teacher, images_dir, out, image_info=image_info,
                           merge_with=merge_with, merge_images=merge_images,
                           score_thresh=score_thresh, batch_size=batch_size, device=device,
                           precision=precision, progress=not quiet)
    if summary is None:   # not rank 0 of several processes
        return
    if not quiet:
        _print_summary(summary, score_thresh, merge_with)
    if draw:
        _draw(teacher, images_dir, image_info, out, summary, count=draw, seed=draw_seed,
              score_thresh=score_thresh, device=device, precision=precision, quiet=quiet)


def _draw(teacher, images_dir, image_info, out, summary: dict, *, quiet: bool,
          device: str, **options) -> None:
    """--draw: pictures of the teacher's boxes on unlabeled images, next to ``out``."""
    from sadpipe.engine.distributed import resolve_device
    from sadpipe.evaluation.pictures import DRAWINGS_DIR, write_pseudo_label_pictures
    from sadpipe.fileio import load_json_file

    paths = write_pseudo_label_pictures(teacher, images_dir, image_info, load_json_file(out),
                                        out.parent, id_offset=summary["id_offset"],
                                        device=resolve_device(device), **options)
    if not quiet:
        click.echo(f"  drew {len(paths)} unlabeled images in {out.parent / DRAWINGS_DIR}")


def _print_summary(summary: dict, score_thresh: float, merge_with) -> None:
    skipped = summary["skipped"]
    click.echo(f"wrote {summary['out']}: {summary['kept']} unlabeled images with "
               f"{summary['boxes']} boxes (score >= {score_thresh:g})")
    click.echo(f"  images in: {summary['images']}; kept: {summary['kept']}; "
               f"no box >= {score_thresh:g}: {summary['empty']}; unreadable: {len(skipped)}")
    for entry in skipped:
        click.echo(f"    skipped {entry['file_name']}: {entry['error']}")
    if merge_with is not None:
        click.echo(f"  merged with {merge_with}: {summary['labeled_images']} images, "
                   f"{summary['labeled_annotations']} annotations (unlabeled image ids "
                   f"shifted by {summary['id_offset']})")
    click.echo(f"  images root: {summary['images_root']} (pass --images "
               f"{summary['images_root']} to later stages)")
