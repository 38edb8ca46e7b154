"""`sadpipe toy-data`: write the embedded default dataset (generated shapes, COCO format)."""
from pathlib import Path

import click

from sadpipe.data.toy import MAX_IMAGES, generate_toy_dataset

HELP = """Generate the small built-in detection dataset that the default pipeline runs on.

\b
It is a real, if small, detection problem: 10 shape categories (circle, square, triangle,
star, cross, ring, hexagon, crescent, arrow, heart; COCO ids 1-17, not contiguous) with
varied texture, rotation, stretch and size (14 to 80 px), most in a colour typical of their
category (a cue, not the answer: the rest take any colour), partly hidden by each other,
among unlabelled clutter (lines, scribbles, outlines, blobs, fragments of shapes) on
textured backgrounds. Images are 128-192 px per side in several aspect ratios. Defaults
are sized so the whole SAD pipeline runs on a laptop CPU in minutes.

\b
Writes, under OUT_DIR:
  images/train/000001.jpg ...      labelled training images
  images/unlabeled/000001.jpg ...  unlabelled images for the teacher to label
  images/val/000001.jpg ...        labelled validation images
  annotations/train.json           COCO dataset: images, annotations, categories
  annotations/val.json             COCO dataset
  annotations/unlabeled.json       images and categories only (like COCO's
                                   image_info_unlabeled2017.json)

\b
Boxes are the tight x,y,w,h of each object's visible pixels. The same --seed gives
byte-identical files, and image N does not change when you ask for more images. Running
again with the same options into a complete OUT_DIR does nothing. The annotation files are
written last, so an interrupted run leaves no annotation file behind.

\b
Example:
  sadpipe toy-data data/toy
  sadpipe toy-data data/tiny --num-train 20 --num-unlabeled 50 --num-val 20
"""

_COUNT = click.IntRange(0, MAX_IMAGES)


@click.command(name="toy-data", help=HELP, short_help="Generate the small built-in shapes dataset.")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Random seed; the same seed gives the same bytes.")
@click.option("--num-train", type=_COUNT, default=300, show_default=True,
              help="Labelled training images.")
@click.option("--num-unlabeled", type=_COUNT, default=3000, show_default=True,
              help="Unlabelled images (for pseudo-labels and distillation).")
@click.option("--num-val", type=_COUNT, default=300, show_default=True,
              help="Labelled validation images.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes drawing images in parallel; the output is the same for any value.")
def command(out_dir, seed, num_train, num_unlabeled, num_val, workers):
    summary = generate_toy_dataset(out_dir, seed=seed, num_train=num_train, num_unlabeled=num_unlabeled,
                                   num_val=num_val, workers=workers, progress=True)
    verb = "wrote" if summary["generated"] else "already complete, kept"
    click.echo(f"{verb} toy dataset in {summary['out_dir']} (seed {summary['seed']}, "
               f"{len(summary['categories'])} categories)")
    for split, info in summary["splits"].items():
        boxes = "" if info["annotations"] is None else f", {info['annotations']} boxes"
        click.echo(f"  {split:<9} {info['images']} images{boxes}: {info['annotation_file']}")
