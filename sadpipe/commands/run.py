"""`sadpipe run`: run a pipeline file's stages in order, skipping what is up to date."""
from pathlib import Path

import click

HELP = """Run the stages of a PIPELINE file, in order, in a work folder.

\b
PIPELINE is a pipeline file (TOML) or the name of a shipped one:
  toy_sad             the embedded default (what `sadpipe demo` runs)
  custom_sad          the same chain on your own COCO-format data (set data.root)
  coco_r50_from_r101  COCO 2017, R-50 student, R-101 teacher, 8 GPUs
  coco_r101_from_x101 COCO 2017, R-101 student, X-101-64x4d teacher, 8 GPUs

\b
Each stage is one sadpipe command, run as its own process (under torchrun when the
pipeline asks for several); its output goes to WORKDIR/logs/STAGE.log while one progress
line per stage shows here. WORKDIR/state.json records each stage's fingerprint: its
command line plus the content of its input files (for image folders: names, sizes and
times; for files another stage wrote: that stage's run). So running the same command again:
  - skips every stage whose outputs exist and whose fingerprint has not changed;
  - continues a stage that was killed or failed (train with --resume, the others by
    running the same command again);
  - runs afresh a stage whose inputs or settings changed, and then every stage that
    reads its outputs.
The first failure stops the run with the stage's name and log. At the end WORKDIR holds
report.md / report.json (the paper's main-results table for this run, AP50/AP75/APs/APm/APl
per model, teacher-cache size per view, wall time per stage) and pr_curves.png.

\b
Examples:
  sadpipe run toy_sad --workdir work/toy
  sadpipe run toy_sad --set data.num_unlabeled=500 --set vars.teacher_iters=300
  sadpipe run custom_sad --workdir work/mine --set data.root=path/to/mydata
  sadpipe run coco_r50_from_r101 --set data.root=/datasets/coco \\
      --set data.teacher_checkpoint=teacher_r101.pt     # skips teacher training
  sadpipe run toy_sad --from student_sad               # retrain the distilled student
  sadpipe run toy_sad --dry-run                        # show the commands only
"""


@click.command(name="run", help=HELP, short_help="Run a pipeline (stages, resume, report).")
@click.argument("pipeline_file", metavar="PIPELINE")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Work folder for every stage's output, logs and state "
                   "[default: work/<pipeline name>].")
@click.option("--from", "start", metavar="STAGE",
              help="Run STAGE and every later stage again, afresh (earlier ones only if they "
                   "are not up to date).")
@click.option("--only", metavar="STAGE",
              help="Run just STAGE again, afresh, on what earlier runs left; no report.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Change a [data] or [vars] value of the pipeline, e.g. --set data.seed=1 "
                   "(repeatable).")
@click.option("--dry-run", is_flag=True,
              help="Print each stage's command line and exit without running anything.")
def command(pipeline_file, workdir, start, only, overrides, dry_run):
    from sadpipe.pipeline import find_pipeline, load_pipeline

    pipeline = load_pipeline(find_pipeline(pipeline_file), workdir=workdir, overrides=overrides)
    if dry_run:
        echo_plan(pipeline)
        return
    run_and_summarize(pipeline, start=start, only=only)


def echo_plan(pipeline) -> None:
    import shlex

    click.echo(f"pipeline {pipeline.name} ({pipeline.path}), workdir {pipeline.workdir}")
    for n, stage in enumerate(pipeline.stages, 1):
        if stage.given:
            given = ", ".join(f"{k}={v}" for k, v in stage.outputs.items())
            click.echo(f"{n:>2}. {stage.name}: given ({given})")
            continue
        procs = f" [{stage.nproc} processes]" if stage.nproc > 1 else ""
        click.echo(f"{n:>2}. {stage.name}{procs}: sadpipe {shlex.join(stage.command_line())}")


def run_and_summarize(pipeline, *, start=None, only=None) -> None:
    """Run ``pipeline`` and print where its report is, with the main-results table."""
    import json

    from sadpipe.pipeline import run_pipeline
    from sadpipe.pipeline.report import main_table

    result = run_pipeline(pipeline, start=start, only=only)
    ran = sum(outcome not in ("skipped", "given") for outcome in result.outcomes.values())
    click.echo(f"{ran} of {len(result.outcomes)} stages ran; workdir {pipeline.workdir}")
    if not result.report_files:
        if pipeline.report is not None:
            click.echo("report not updated (--only); run without --only to refresh it")
        return
    report = json.loads(result.report_files[0].read_text())
    click.echo("\n".join(["", *main_table(report["main_results"], report.get("paper")), ""]))
    click.echo("report: " + ", ".join(str(p) for p in result.report_files))
