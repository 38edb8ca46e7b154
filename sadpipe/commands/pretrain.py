"""`sadpipe pretrain`: classification-pretrain a small body on toy object crops."""
import logging
import shlex
import sys
from pathlib import Path

import click

HELP = """Pretrain a small body (toy_teacher or toy_student) by classifying object crops of the
embedded data: the toy world's ImageNet.

\b
Crops come from the generator's own `pretrain` split (never the train, val or unlabeled
images the detectors see): one square crop around every labelled shape (its category) and
one crop of clutter or backdrop per image (class "background"), 48 x 48 pixels. The body
(as it sits under the detector's FPN) plus a linear layer learns to classify them; the body's
weights are written to OUT with how they were made (command, settings, generator version,
held-out accuracy, wall time). The same --seed gives the same weights on CPU.

\b
`model.pretrained = true` in a train config loads the zoo's body for a toy arch
(sadpipe/zoo/ARCH_body.pt); `model.body_weights = "OUT"` loads this file instead.

\b
Example:
  sadpipe pretrain --arch toy_student --out runs/toy_student_body.pt
A killed run continues from its last finished epoch when run again with the same options.
"""


SMALL_ARCHS = ["toy_teacher", "toy_student", "toy_student_mid"]  # the RegNet bodies of
# sadpipe.modeling.backbones.ARCHS, named here so that --help loads no torch


@click.command(name="pretrain", help=HELP, short_help="Pretrain a toy body on object crops.")
@click.option("--arch", required=True, type=click.Choice(SMALL_ARCHS),
              help="Which small body to pretrain.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Body file to write (.pt).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the crops and of the training.")
@click.option("--num-images", type=click.IntRange(min=1), default=8000, show_default=True,
              help="Pretrain-split images to cut training crops from (~4.5 crops each).")
@click.option("--num-val-images", type=click.IntRange(min=0), default=500, show_default=True,
              help="Further images whose crops measure the held-out accuracy.")
@click.option("--epochs", type=click.IntRange(min=1), default=6, show_default=True,
              help="Passes over the training crops.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True,
              help="Crops per SGD step.")
@click.option("--lr", "base_lr", type=click.FloatRange(min=0, min_open=True), default=0.2,
              show_default=True, help="Peak SGD learning rate (warm-up, then cosine to 0).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes cutting crops; the output does not depend on it.")
def command(arch, out_path, seed, num_images, num_val_images, epochs, batch_size, base_lr, workers):
    from sadpipe.engine.pretrain import PretrainSettings, pretrain

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = PretrainSettings(arch=arch, seed=seed, num_images=num_images,
                                num_val_images=num_val_images, epochs=epochs,
                                batch_size=batch_size, base_lr=base_lr)
    provenance = pretrain(settings, out_path, workers=workers,
                          command=shlex.join(["sadpipe", *sys.argv[1:]]))
    click.echo(f"wrote {out_path}: {arch} body, held-out accuracy "
               f"{100 * provenance['val_accuracy']:.2f} % on {provenance['num_val_crops']} crops, "
               f"{provenance['wall_time_s']:.0f} s")
