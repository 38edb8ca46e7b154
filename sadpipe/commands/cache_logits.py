"""`sadpipe cache-logits`: run the teacher once and store its class scores in shards."""
import logging
import shlex
import sys

import click

from cuda_ops.constants import FP32, PRECISIONS
from sadpipe.errors import UserError


@click.command(name="cache-logits")
@click.option("--teacher", "teacher_path", required=True, type=click.Path(dir_okay=False),
              help="Teacher checkpoint (sadpipe format).")
@click.option("--annotations", required=True, type=click.Path(dir_okay=False),
              help="COCO json of the images to cache: the labeled set or the pseudo set "
                   "(from pseudo-label); its boxes travel in the shards as the targets.")
@click.option("--images", "images_dir", required=True, type=click.Path(file_okay=False),
              help="Folder the json's file names are relative to.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Shard folder: rankRR-NNNNNN.tar shards and manifest.json.")
@click.option("--views", default="orig,hflip", show_default=True,
              help="Views cached per image: orig and/or hflip (the student's train-time flips).")
@click.option("--student-config", type=click.Path(dir_okay=False),
              help="The student's train config: view sizes and normalisation are taken from "
                   "it (input.train_min_sizes / max_size / size_divisibility and the pixel "
                   "normalisation), so views "
                   "match exactly.")
@click.option("--min-size", type=int, help="Short side of the views (overrides the config).")
@click.option("--max-size", type=int, help="Long-side cap of the views (overrides the config).")
@click.option("--shard-size", default=64, show_default=True, help="Images per shard.")
@click.option("--batch-size", default=1, show_default=True,
              help="Images per teacher batch (their views share one forward pass).")
@click.option("--shuffle-seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of the order images are stored in: shuffled, so that every shard "
                   "(and every batch training reads from one) mixes the whole set.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=FP32, show_default=True,
              help="The teacher network's precision: fp32, or autocast to bf16 / fp16. Recorded "
                   "in the shards' header; training takes the cache only with the same "
                   "distill.teacher_precision (README, Mixed precision).")
@click.option("--overwrite", is_flag=True,
              help="Replace shards in --out that were made by another teacher or settings.")
def command(teacher_path, annotations, images_dir, out_dir, views, student_config, min_size,
            max_size, shard_size, batch_size, shuffle_seed, device, precision, overwrite):
    """Cache the teacher's dense class scores for every view of every image.

    The teacher runs on each view exactly as the student will see it during training (same
    resize, same flip, same anchors), each view alone on its own padded grid (as the live
    teacher of `train --teacher` does too); a sparse codec keeps the informative scores, and
    each sample also stores the image, its targets and the exact ADL normaliser Σq^1.8.
    Images without boxes are left out (training never uses them), and the others are
    stored in a shuffled order (--shuffle-seed) so every shard mixes the whole set. Killed
    runs resume where they stopped when started again with the same command; under
    `torchrun --nproc_per_node=K` each rank writes its own shards and rank 0 writes the
    manifest.

    \b
    Example (embedded data):
      sadpipe cache-logits --teacher runs/teacher/model_final.pt \\
          --annotations data/annotations/train.json --images data/images/train \\
          --student-config pipelines/toy_student_sad.toml --out shards/labeled
    """
    from sadpipe.engine.cache_logits import cache_logits, student_cache_settings
    from sadpipe.engine.distributed import init_distributed, resolve_device
    from sadpipe.engine.progress import Progress

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if shard_size < 1 or batch_size < 1:
        raise UserError("--shard-size and --batch-size must be at least 1")
    settings = student_cache_settings(student_config, min_size=min_size, max_size=max_size,
                                      views=tuple(v.strip() for v in views.split(",") if v.strip()),
                                      shard_size=shard_size, batch_size=batch_size,
                                      shuffle_seed=shuffle_seed)
    device = resolve_device(device)
    dist = init_distributed(device)
    progress = Progress("cache-logits", unit="img", enabled=dist.is_main)  # started by cache_logits
    manifest = cache_logits(teacher_path, annotations, images_dir, out_dir, settings=settings,
                            dist=dist, device=device, precision=precision, overwrite=overwrite,
                            command=shlex.join(["sadpipe", *sys.argv[1:]]), progress=progress)
    progress.close()
    if manifest is not None:
        totals = manifest["totals"]
        click.echo(f"wrote {out_dir}: {totals['samples']} images, "
                   f"{totals['payload_bytes_per_view'] / 1024:.1f} KiB per view "
                   f"({totals['compression_vs_fp16']:.1f}x smaller than dense fp16), "
                   f"{totals['skipped']} skipped")
