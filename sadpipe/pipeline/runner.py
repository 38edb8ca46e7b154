"""Run a pipeline's stages in order, skipping what is up to date and resuming what was cut off.

For each stage (see ``sadpipe.pipeline.state`` for the record kept in ``WORKDIR/state.json``):

* **given** (its outputs supplied by the user): nothing to run;
* **skip**: its last run finished with the same fingerprint and every output exists;
* **resume**: its last run had the same fingerprint but was killed or failed: the same
  command again plus the stage's ``resume`` arguments (``train --resume``);
* **fresh** otherwise: its ``clean`` folders are removed, then the command runs.

``--from STAGE`` runs that stage and every later one fresh (earlier ones as above);
``--only STAGE`` runs just that stage, fresh, from the outputs earlier runs left. The first
failure stops the run: ``stage NAME failed (exit N); log: PATH``.
"""
from __future__ import annotations

import importlib.util
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import click

from sadpipe.errors import UserError
from sadpipe.pipeline.display import StageDisplay, format_duration, tail_lines
from sadpipe.pipeline.fingerprint import InputHasher, MissingInput, stage_fingerprint
from sadpipe.pipeline.launch import run_logged
from sadpipe.pipeline.spec import Pipeline
from sadpipe.pipeline.stage import Stage
from sadpipe.pipeline.state import DONE, FAILED, FRESH, RESUME, RUNNING, RunState, workdir_lock

LOG_DIR = "logs"
FAILED_LOG_LINES = 15
SKIPPED, GIVEN = "skipped", "given"


@dataclass
class RunResult:
    """What happened to each stage (``skipped``, ``given``, ``fresh``, ``resume``) and the
    report files written (empty when no report was due)."""

    outcomes: dict[str, str] = field(default_factory=dict)
    report_files: list[Path] = field(default_factory=list)


def run_pipeline(pipeline: Pipeline, *, start: str | None = None, only: str | None = None,
                 display: StageDisplay | None = None) -> RunResult:
    """Run ``pipeline`` in its workdir (see the module docstring). ``start`` and ``only`` are
    stage names (``--from`` / ``--only``), at most one of them."""
    if start is not None and only is not None:
        raise UserError("--from and --only: give one of them")
    stages = pipeline.stages
    first = pipeline.index(start, option="--from") if start else 0
    picked = pipeline.index(only, option="--only") if only else None
    display = display or StageDisplay(len(stages))
    pipeline.workdir.mkdir(parents=True, exist_ok=True)
    result = RunResult()
    with workdir_lock(pipeline.workdir):
        state = RunState(pipeline.workdir)
        selected = [i for i in range(len(stages)) if picked is None or i == picked]
        _preflight(pipeline, selected)
        hasher = InputHasher(state.file_digests)
        for i in selected:
            forced = picked is not None or (start is not None and i >= first)
            result.outcomes[stages[i].name] = _do_stage(pipeline, i, state, hasher, display,
                                                        forced=forced)
        state.save()  # keeps the file digests learned on the way
        if pipeline.report is not None and picked is None:
            from sadpipe.pipeline.report import write_report  # matplotlib: only when needed

            result.report_files = write_report(pipeline, state)
    return result


def _do_stage(pipeline: Pipeline, i: int, state: RunState, hasher: InputHasher,
              display: StageDisplay, *, forced: bool) -> str:
    stage = pipeline.stages[i]
    if stage.given:
        shown = ", ".join(str(p) for p in stage.outputs.values())
        display.note(i, stage.name, f"given ({_short(shown)})")
        return GIVEN
    fingerprint = _fingerprint(pipeline, i, state, hasher)
    mode = FRESH if forced else decide(stage, state.record(stage.name), fingerprint)
    if mode is None:
        display.note(i, stage.name, "up to date, skipped")
        return SKIPPED
    _execute(pipeline, i, state, display, fingerprint=fingerprint, mode=mode)
    return mode


def decide(stage: Stage, record: dict | None, fingerprint: str) -> str | None:
    """None (skip), ``RESUME`` or ``FRESH`` for a stage whose last run is ``record``."""
    if record is None or record.get("fingerprint") != fingerprint:
        return FRESH
    if record["status"] == DONE:
        return None if stage.outputs_complete() else FRESH
    return RESUME if record["status"] in (RUNNING, FAILED) else FRESH


def _execute(pipeline: Pipeline, i: int, state: RunState, display: StageDisplay, *,
             fingerprint: str, mode: str) -> None:
    stage = pipeline.stages[i]
    log = pipeline.workdir / LOG_DIR / f"{stage.name}.log"
    resume = mode == RESUME
    if not resume:
        for path in stage.clean:
            _remove(path)
    command = stage.command_line(resume=resume)
    state.start(stage.name, fingerprint=fingerprint, command=command, mode=mode, log=log)
    verb = "resuming" if resume else "running"
    display.started(i, stage.name, f"{verb} sadpipe {shlex.join(command)}")
    code, wall = run_logged(
        stage.argv(resume=resume), log, append=resume,
        on_start=lambda pid: state.set_pid(stage.name, pid),
        on_tick=lambda elapsed: display.tick(i, stage.name, elapsed, log))
    missing = [path for path in stage.outputs.values() if not path.exists()]
    ok = code == 0 and not missing
    state.finish(stage.name, exit_code=code, wall_s=wall, ok=ok)
    if ok:
        display.note(i, stage.name, f"done in {format_duration(wall)}")
        return
    display.note(i, stage.name, f"failed after {format_duration(wall)}; last lines of {log}:")
    for line in tail_lines(log, FAILED_LOG_LINES):
        click.echo(f"    {line}", err=True)
    if code != 0:
        how = f"exit {code}" if code > 0 else f"killed by signal {-code}"
        raise UserError(f"stage {stage.name} failed ({how}); log: {log}")
    raise UserError(f"stage {stage.name} failed (exit 0 but {missing[0]} was not written); "
                    f"log: {log}")


def _fingerprint(pipeline: Pipeline, i: int, state: RunState, hasher: InputHasher) -> str:
    stage = pipeline.stages[i]
    digests = []
    for path in stage.inputs:
        producer = producer_of(pipeline, path, before=i)
        if producer is None:
            digests.append((path, _digest(hasher, path, stage)))
            continue
        record = state.record(producer)
        if record is None or record["status"] != DONE:
            raise UserError(f"stage {stage.name}: input {path} comes from stage '{producer}', "
                            "which has not completed; run it first")
        if not path.exists():
            raise UserError(f"stage {stage.name}: input {path} does not exist, although stage "
                            f"'{producer}' completed; run --from {producer}")
        digests.append((path, f"stage:{record['token']}"))
    return stage_fingerprint(stage.command_line(), stage.nproc, digests, pipeline.workdir)


def producer_of(pipeline: Pipeline, path: Path, *, before: int) -> str | None:
    """The earlier stage (not given) whose output is ``path`` or a folder holding it; the
    deepest such output wins."""
    best, depth = None, -1
    for stage in pipeline.stages[:before]:
        if stage.given:
            continue
        for output in stage.outputs.values():
            if (output == path or output in path.parents) and len(output.parts) > depth:
                best, depth = stage.name, len(output.parts)
    return best


def _digest(hasher: InputHasher, path: Path, stage: Stage) -> str:
    try:
        return hasher.digest(path)
    except MissingInput:
        raise UserError(f"stage {stage.name}: input {path} does not exist") from None


def _preflight(pipeline: Pipeline, selected: list[int]) -> None:
    """Before anything runs: commands installed, given files and outside inputs present."""
    from sadpipe.commands import COMMANDS

    modules = dict(COMMANDS)
    for stage in pipeline.stages:
        if stage.given:
            for name, path in stage.outputs.items():
                if not path.exists():
                    raise UserError(f"stage {stage.name}: given {name} {path} does not exist")
    for i in selected:
        stage = pipeline.stages[i]
        if stage.given:
            continue
        if importlib.util.find_spec(f"sadpipe.commands.{modules[stage.command]}") is None:
            raise UserError(f"stage {stage.name}: command '{stage.command}' is not available "
                            "in this sadpipe installation")
        for path in stage.inputs:
            if producer_of(pipeline, path, before=i) is None and not path.exists():
                raise UserError(f"stage {stage.name}: input {path} does not exist")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _short(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else "..." + text[-(limit - 3):]
