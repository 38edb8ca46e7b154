"""`sadpipe import-detectron`: use the SAD release's Detectron models in sadpipe."""
import click

from sadpipe.errors import UserError


@click.command(name="import-detectron")
@click.argument("weights_path", type=click.Path(dir_okay=False))
@click.option("--arch", required=True,
              help="Body of the model: resnet50 or resnet101 (MSRA ResNets), or "
                   "resnext101_64x4d. Checked against the file's blob names and shapes.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="sadpipe checkpoint to write.")
@click.option("--min-size", default=600, show_default=True,
              help="Test-time short side (the release: 600, or 500 for the R-101 student).")
@click.option("--max-size", default=1000, show_default=True,
              help="Test-time long-side cap (the release: 1000, or 833 with 500).")
def command(weights_path, arch, out_path, min_size, max_size):
    """Convert a Detectron (Caffe2) RetinaNet weight file (.pkl) — the SAD release's
    teachers and students — into a self-describing sadpipe checkpoint.

    The checkpoint records Detectron's variant of the model (stride in the 1x1 conv for the
    MSRA ResNets, AffineChannel norm, P6 from C5, the release's anchors, "+1" boxes, BGR
    input minus pixel means, P7 score threshold 0) and the 80 COCO categories, so `eval`,
    `pseudo-label`, `cache-logits` and `train --teacher` / `model.init` use it like any
    other checkpoint and reproduce Detectron's inference.

    The file is unpickled without running anything: only numpy arrays are admitted.
    Training state (*_momentum), ImageNet leftovers (fc1000_*, zero conv biases) and a
    distilled student's teacher/* blobs are skipped and counted.

    \b
    Example (the release's R-101 teacher, then COCO mAP on val2017):
      sadpipe import-detectron retinanet_R-101.pkl --arch resnet101 --out r101_teacher.pt
      sadpipe eval --checkpoint r101_teacher.pt --images coco/val2017 \\
          --annotations coco/annotations/instances_val2017.json --out eval/r101 --device cuda
    """
    from sadpipe.checkpoint import save_checkpoint
    from sadpipe.convert.detectron_import import DETECTRON_ARCHS, import_blobs
    from sadpipe.convert.detectron_pickle import load_blobs
    from sadpipe.fileio import file_sha256

    if arch not in DETECTRON_ARCHS:
        raise UserError(f"--arch: '{arch}' is not a Detectron model sadpipe knows "
                        f"(known: {', '.join(DETECTRON_ARCHS)})")
    blobs = load_blobs(weights_path)
    spec, state, summary = import_blobs(blobs, arch, source=weights_path, min_size=min_size,
                                        max_size=max_size)
    model = spec.build()
    model.load_state_dict(state)
    save_checkpoint(out_path, spec, model,
                    source={"detectron_weights": str(weights_path),
                            "sha256": file_sha256(weights_path)})
    click.echo(f"wrote {out_path}: {arch} (Detectron variant), {spec.num_classes} COCO "
               f"categories, test size {min_size}/{max_size}; {summary.describe()}")
