"""`sadpipe demo`: the whole SAD pipeline on the embedded data, on a laptop CPU."""
from pathlib import Path

import click

HELP = """Run Semi-supervised Adaptive Distillation end to end on the embedded shapes data.

\b
Same as `sadpipe run toy_sad --workdir WORKDIR --set data.seed=SEED`:
  1. data            generate labelled, unlabelled and validation images
  2. teacher         the model zoo's toy teacher (sadpipe/zoo/toy_teacher.pt), trained
                     once, long; --train-teacher trains one here instead
  3. student         fine-tune the student from its pretrained body alone: the baseline
  4. pseudo_label    the teacher labels the unlabelled images (train + unlabelled set)
  5. cache_labeled   the teacher's class scores on the labelled set, stored once
  6. cache_pseudo    ... and on the pseudo-labelled set
  7. student_sad     the same student and schedule with the adaptive distillation loss
  8-10. eval_*       COCO mAP of teacher, baseline student and distilled student
then WORKDIR/report.md, report.json and pr_curves.png: the paper's main-results table for
this run; and gallery.png: what each model finds on the same val images, and the teacher's
pseudo-labels. Before it starts, the demo measures this machine for a few seconds and prints an
estimate of its total time. Stage logs go to WORKDIR/logs/. Running the demo again skips
what is done and continues a stage that was interrupted.

\b
The pipeline file is pipelines/toy_sad.toml (shipped inside the package as
sadpipe/pipelines/toy_sad.toml); `sadpipe run` takes the same file with more options.
"""


@click.command(name="demo", help=HELP, short_help="Run the embedded SAD pipeline end to end.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("work/demo"), show_default=True,
              help="Work folder for data, models, caches, logs and the report.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the generated data and of every training run.")
@click.option("--train-teacher", is_flag=True,
              help="Train the toy teacher in this run (toy_teacher.toml for vars.teacher_iters "
                   "iterations) instead of taking the zoo's: much longer, and a weaker teacher "
                   "unless given the zoo's hours (`sadpipe run toy_zoo`).")
def command(workdir, seed, train_teacher):
    from sadpipe.commands.run import run_and_summarize
    from sadpipe.pipeline import DEMO_PIPELINE, find_pipeline, load_pipeline
    from sadpipe.pipeline.estimate import estimate_seconds, format_estimate

    overrides = (f"data.seed={seed}",) + (('data.teacher_checkpoint=""',) if train_teacher else ())
    pipeline = load_pipeline(find_pipeline(DEMO_PIPELINE), workdir=workdir, overrides=overrides)
    click.echo(format_estimate(estimate_seconds(pipeline)))
    run_and_summarize(pipeline)
