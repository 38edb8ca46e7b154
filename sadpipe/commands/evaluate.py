"""``sadpipe eval``: COCO box mAP of a checkpoint, or of an existing results file."""
from __future__ import annotations

from pathlib import Path

import click

from sadpipe.data.coco import CocoDataset
from sadpipe.errors import UserError
from sadpipe.fileio import write_json

# Options that only mean something when a checkpoint is run.
INFERENCE_OPTIONS = ("images", "batch_size", "device")
DETECTIONS_FILE = "detections.json"


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
                   "(with --checkpoint only).")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Output folder (created if missing).")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True,
              help="Images per inference batch (with --checkpoint only).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu",
              show_default=True, help="Where inference runs (with --checkpoint only).")
@click.option("--quiet", is_flag=True, help="Do not print progress or the metrics table.")
@click.pass_context
def command(ctx, checkpoint, detections, annotations, images, out, batch_size, device,
            quiet):
    """Measure a detector's COCO box mAP (pycocotools) on a labeled image set.

    Give exactly one of --checkpoint (run the model, then evaluate) or --detections
    (evaluate results you already have).

    \b
    Examples:
      sadpipe eval --checkpoint runs/student/model_final.pt \\
                   --annotations data/val.json --images data/val --out runs/student/eval
      sadpipe eval --detections runs/student/eval/detections.json \\
                   --annotations data/val.json --out runs/student/eval2

    \b
    Writes to --out:
      detections.json  the model's detections, COCO results format (--checkpoint only)
      metrics.json     AP, AP50, AP75, APs/m/l, AR1/10/100, ARs/m/l as fractions
                       (null where undefined), per-class AP, image and detection counts
      pr_curve.json    precision at 101 recall points, one list per IoU 0.50:0.95
      pr_curve.png     those curves, drawn
    and prints the metrics in percent.
    """
    from sadpipe.evaluation.coco_eval import check_out_dir, evaluate_detections

    _check_options(ctx, checkpoint, detections, images)
    if detections is not None:
        evaluate_detections(annotations, detections, out, quiet=quiet)
        return
    check_out_dir(out)
    results = _detect(checkpoint, annotations, images, batch_size=batch_size, device=device,
                      progress=not quiet)
    results_path = out / DETECTIONS_FILE
    write_json(results_path, results, indent=None)
    evaluate_detections(annotations, results, out, quiet=quiet, source=str(results_path))


def _check_options(ctx, checkpoint, detections, images) -> None:
    if (checkpoint is None) == (detections is None):
        raise click.UsageError("give exactly one of --checkpoint or --detections", ctx=ctx)
    if checkpoint is not None and images is None:
        raise click.UsageError("--checkpoint needs --images (the images folder)", ctx=ctx)
    if detections is not None:
        given = [name for name in INFERENCE_OPTIONS
                 if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise click.UsageError(f"{flags}: only used with --checkpoint", ctx=ctx)


def _detect(checkpoint: Path, annotations: Path, images: Path, **kwargs) -> list[dict]:
    if not checkpoint.is_file():
        raise UserError(f"{checkpoint}: checkpoint file not found")
    dataset = CocoDataset(annotations, images)
    from sadpipe.engine.inference import detect_dataset  # imports torch: only when needed

    return detect_dataset(checkpoint, dataset, **kwargs)
