"""`sadpipe train`: train a RetinaNet (teacher, baseline or distilled student)."""
import logging
import os
import shlex
import sys

import click

from sadpipe.config import load_config


@click.command(name="train")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="TOML config, e.g. pipelines/toy_teacher.toml (defaults: the paper's).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Run folder: config.toml, metrics.jsonl, checkpoints/, model_final.pt.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set solver.max_iter=500 (repeatable).")
@click.option("--teacher-shards", type=click.Path(file_okay=False),
              help="Distil from cached teacher scores of the LABELED set (from cache-logits).")
@click.option("--pseudo-shards", type=click.Path(file_okay=False),
              help="Distil from cached teacher scores of the PSEUDO-LABELED set (train ∪ unlabeled).")
@click.option("--teacher", "teacher_path", type=click.Path(dir_okay=False),
              help="Distil from a live teacher checkpoint run inside every step (online mode; "
                   "data from data.train_annotations and data.pseudo_annotations). With "
                   "--teacher-shards / --pseudo-shards: the cached batches, rescored by the "
                   "teacher that made them (what the cache's codec costs, measured).")
def command(config_path, out_dir, resume, overrides, teacher_shards, pseudo_shards, teacher_path):
    """Train a RetinaNet detector on a COCO-format dataset, optionally distilling a teacher.

    \b
    Plain training (teachers and baselines):
      sadpipe train --config pipelines/toy_teacher.toml --out runs/teacher \\
          --set data.train_annotations=data/annotations/train.json \\
          --set data.train_images=data/images/train
    Semi-supervised adaptive distillation from the cache (fast; images, targets and teacher
    scores all come from the shards):
      sadpipe train --config pipelines/toy_student_sad.toml --out runs/student_sad \\
          --teacher-shards shards/labeled --pseudo-shards shards/pseudo
    The same batches with the live teacher's exact scores instead of the cached ones (slower;
    to measure what the cache costs): add --teacher runs/teacher/model_final.pt.

    Batches alternate between the labeled and the pseudo-labeled set (distill.pattern);
    each gets focal + box loss on its (pseudo-)labels plus the adaptive distillation loss.
    Writes the resolved config, one JSON line of metrics per logged step, periodic
    checkpoints (atomically) and model_final.pt, a self-describing checkpoint that
    `sadpipe eval`, `pseudo-label` and `cache-logits` take as is, and curves.png (loss
    terms, LR, val AP). With train.eval_period = N the val set (data.val_annotations,
    data.val_images) is evaluated every N iterations and after the last, and
    model_best.pt keeps the best val AP. Under
    `torchrun --nproc_per_node=K` the global batch (solver.images_per_batch) is split
    over K processes with DistributedDataParallel.
    """
    from sadpipe.engine.trainer import train

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = load_config(config_path, overrides)
    run = train(cfg, out_dir, resume=resume, teacher_shards=teacher_shards,
                pseudo_shards=pseudo_shards, teacher_path=teacher_path,
                command=shlex.join(["sadpipe", *sys.argv[1:]]))
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        click.echo(f"model: {run.final_model}")
