"""`sadpipe train`: train a RetinaNet (teacher, baseline or distilled student)."""
import logging

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
def command(config_path, out_dir, resume, overrides):
    """Train a RetinaNet detector on a COCO-format dataset.

    \b
    Example (embedded data from `sadpipe toy-data data/`):
      sadpipe train --config pipelines/toy_teacher.toml --out runs/teacher \\
          --set data.train_annotations=data/annotations/train.json \\
          --set data.train_images=data/images/train

    Writes the resolved config, one JSON line of metrics per logged step, periodic
    checkpoints (atomically) and model_final.pt, a self-describing checkpoint that
    `sadpipe eval`, `pseudo-label` and `cache-logits` take as is. Launch under
    `torchrun --nproc_per_node=K` for several processes (the global batch is split).
    """
    from sadpipe.engine.trainer import train

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = load_config(config_path, overrides)
    run = train(cfg, out_dir, resume=resume)
    click.echo(f"model: {run.final_model}")
