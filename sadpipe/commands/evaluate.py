"""``sadpipe eval``: COCO box mAP of a checkpoint, or of an existing results file."""
from __future__ import annotations

from pathlib import Path

import click

from cuda_ops.constants import FP32, PRECISIONS
from sadpipe.data.coco import CocoDataset
from sadpipe.errors import UserError
from sadpipe.fileio import write_json

# Options that only mean something when a checkpoint is run.
INFERENCE_OPTIONS = ("batch_size", "device", "precision")
# Options that only mean something with --draw N > 0.
DRAW_OPTIONS = ("draw_score", "draw_seed")
DETECTIONS_FILE = "detections.json"
DRAW_SCORE = 0.3


@click.command("eval")
@click.option("--checkpoint", type=click.Path(path_type=Path),
              help="Model checkpoint (.pt) to run on every image of --annotations.")
@click.option("--detections", type=click.Path(path_type=Path),
              help="Existing COCO results file to evaluate instead: a JSON list of "
                   '{"image_id", "category_id", "bbox": [x, y, w, h], "score"}.')
@click.option("--annotations", required=True, type=click.Path(path_type=Path),
              help="Ground truth: a COCO dataset-format JSON (e.g. instances_val2017.json).")
@click.option("--images", type=click.Path(path_type=Path),
              help="Folder the images' file_name entries are relative to "
                   "(with --checkpoint, or with --detections and --draw).")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Output folder (created if missing).")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True,
              help="Images per inference batch (with --checkpoint only).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu",
              show_default=True, help="Where inference runs (with --checkpoint only).")
@click.option("--precision", type=click.Choice(PRECISIONS), default=FP32, show_default=True,
              help="The network's precision: fp32, or autocast to bf16 / fp16 (with "
                   "--checkpoint only; README, Mixed precision).")
@click.option("--draw", type=click.IntRange(min=0), default=0, show_default=True,
              metavar="N",
              help="Also draw N of the images: the detections (those scoring at least "
                   "--draw-score) labelled with class and score, the ground truth dashed "
                   "black and white. PNGs in OUT/drawings/; needs --images. 0: none.")
@click.option("--draw-score", type=click.FloatRange(0.0, 1.0), default=DRAW_SCORE,
              show_default=True, help="Lowest score of a drawn detection (with --draw).")
@click.option("--draw-seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Which images --draw picks. The same seed picks the same images of a "
                   "set for any model, so the pictures of several models compare.")
@click.option("--quiet", is_flag=True, help="Do not print progress or the metrics table.")
@click.pass_context
def command(ctx, checkpoint, detections, annotations, images, out, batch_size, device,
            precision, draw, draw_score, draw_seed, quiet):
    """Measure a detector's COCO box mAP (pycocotools) on a labeled image set.

    Give exactly one of --checkpoint (run the model, then evaluate) or --detections
    (evaluate results you already have).

    \b
    Examples:
      sadpipe eval --checkpoint runs/student/model_final.pt \\
                   --annotations data/val.json --images data/val --out runs/student/eval
      sadpipe eval --detections runs/student/eval/detections.json \\
                   --annotations data/val.json --out runs/student/eval2
      sadpipe eval --checkpoint runs/student/model_final.pt --draw 5 \\
                   --annotations data/val.json --images data/val --out runs/student/eval

    \b
    Writes to --out:
      detections.json  the model's detections, COCO results format (--checkpoint only)
      metrics.json     AP, AP50, AP75, APs/m/l, AR1/10/100, ARs/m/l as fractions
                       (null where undefined), per-class AP, image and detection counts,
                       and (--checkpoint) "inference": the model's images/s (network and
                       post-processing; python -m sadpipe.bench.inference compares models)
      pr_curve.json    precision at 101 recall points, one list per IoU 0.50:0.95
      pr_curve.png     those curves, drawn
      drawings/        with --draw N: N images with boxes, <image id>.png
    and prints the metrics in percent.
    """
    from sadpipe.evaluation.coco_eval import check_out_dir, evaluate_detections, read_detections

    _check_options(ctx, checkpoint, detections, images, draw)
    if detections is not None:
        evaluate_detections(annotations, detections, out, quiet=quiet)
        if draw:
            _draw(CocoDataset(annotations, images), read_detections(detections), out,
                  count=draw, min_score=draw_score, seed=draw_seed, quiet=quiet)
        return
    check_out_dir(out)
    timing = {}
    dataset, results = _detect(checkpoint, annotations, images, batch_size=batch_size,
                               device=device, precision=precision, progress=not quiet, timing=timing)
    results_path = out / DETECTIONS_FILE
    write_json(results_path, results, indent=None)
    evaluate_detections(annotations, results, out, quiet=quiet, source=str(results_path),
                        inference=timing)
    if draw:
        _draw(dataset, results, out, count=draw, min_score=draw_score, seed=draw_seed,
              quiet=quiet)


def _check_options(ctx, checkpoint, detections, images, draw) -> None:
    if (checkpoint is None) == (detections is None):
        raise click.UsageError("give exactly one of --checkpoint or --detections", ctx=ctx)
    if checkpoint is not None and images is None:
        raise click.UsageError("--checkpoint needs --images (the images folder)", ctx=ctx)
    given = [name for name in ctx.params
             if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
    if detections is not None:
        _refuse(given, INFERENCE_OPTIONS, "only used with --checkpoint", ctx)
        if not draw:
            _refuse(given, ("images",), "only used with --checkpoint or --draw", ctx)
        elif images is None:
            raise UserError("--draw needs --images (the folder of the images to draw on), "
                            "also with --detections")
        elif not images.is_dir():   # before anything is written
            raise UserError(f"{images}: images folder not found (--images)")
    if not draw:
        _refuse(given, DRAW_OPTIONS, "only used with --draw N (N > 0)", ctx)


def _refuse(given: list[str], names: tuple, why: str, ctx) -> None:
    """A usage error naming the options of ``names`` given on the command line."""
    flags = ", ".join("--" + name.replace("_", "-") for name in names if name in given)
    if flags:
        raise click.UsageError(f"{flags}: {why}", ctx=ctx)


def _detect(checkpoint: Path, annotations: Path, images: Path,
            **kwargs) -> tuple[CocoDataset, list[dict]]:
    """(the dataset, the checkpoint's detections on it as COCO results)."""
    if not checkpoint.is_file():
        raise UserError(f"{checkpoint}: checkpoint file not found")
    dataset = CocoDataset(annotations, images)
    from sadpipe.engine.inference import detect_dataset  # imports torch: only when needed

    return dataset, detect_dataset(checkpoint, dataset, **kwargs)


def _draw(dataset: CocoDataset, results: list[dict], out: Path, *, quiet: bool,
          **options) -> None:
    """--draw: the pictures in OUT/drawings (see sadpipe.evaluation.pictures)."""
    from sadpipe.evaluation.pictures import DRAWINGS_DIR, write_eval_pictures

    paths = write_eval_pictures(dataset, results, out, **options)
    if not quiet:
        click.echo(f"drew {len(paths)} images (detections >= {options['min_score']:g}) in "
                   f"{out / DRAWINGS_DIR}")
