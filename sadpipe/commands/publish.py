"""`sadpipe publish`: a trained model as a release file, with its provenance and val AP."""
from pathlib import Path

import click

HELP = """Write a release copy of a trained checkpoint: its weights and self-description
without the training state (optimizer), its provenance (the training command and config,
data, iterations, wall time, the files it started from), and its COCO box AP measured now on
--annotations, with that dataset's sha256 (and, for toy data, how it was generated).

\b
This is how the toy model zoo's teacher (sadpipe/zoo/toy_teacher.pt) is made:
  sadpipe publish runs/teacher/model_final.pt --annotations data/annotations/val.json \\
      --images data/images/val --out sadpipe/zoo/toy_teacher.pt
The published file is a sadpipe checkpoint: eval, pseudo-label, cache-logits and
train --teacher take it as is. Its recorded AP can be checked by running `sadpipe eval`
on the same data.
"""


@click.command(name="publish", help=HELP, short_help="Release a model with provenance and val AP.")
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--annotations", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Validation set (COCO json) to measure the recorded AP on.")
@click.option("--images", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder of the validation images.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Release file to write (.pt).")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True,
              help="Validation images per inference batch, as `sadpipe eval --batch-size`.")
def command(checkpoint, annotations, images, out_path, batch_size):
    from sadpipe.engine.publish import publish

    provenance = publish(checkpoint, annotations, images, out_path, batch_size=batch_size)
    bbox = provenance["eval"]["metrics"]
    click.echo(f"wrote {out_path}: AP {100 * bbox['AP']:.1f} (AP50 {100 * bbox['AP50']:.1f}, "
               f"AP75 {100 * bbox['AP75']:.1f}) on {provenance['eval']['dataset']['images']} "
               f"images of {annotations}")
