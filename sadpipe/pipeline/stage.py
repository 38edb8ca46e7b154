"""A resolved pipeline stage: one sadpipe command with concrete paths."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_NPROC = 1


@dataclass(frozen=True)
class Stage:
    """One step of a pipeline, every ``${...}`` already substituted.

    Attributes:
        name: unique within the pipeline; names the log (``logs/<name>.log``) and ``--from``.
        command: the sadpipe command (``train``, ``eval``, ...); None for a given stage with
            nothing to run (COCO data).
        args: the command's arguments.
        inputs: files and folders the stage reads; their content (or, for files another stage
            wrote, that stage's run) goes into the stage's fingerprint.
        outputs: {name: path}; the stage is complete when every path exists. Later stages refer
            to them as ``${STAGE.NAME}``.
        resume_args: appended to ``args`` when an interrupted run is continued.
        clean: folders removed before a fresh (not resumed) run; all inside the workdir.
        nproc: processes; more than 1 runs the command under ``torch.distributed.run``.
        given: the outputs were supplied by the user (e.g. a teacher checkpoint): not run.
    """

    name: str
    command: str | None
    args: tuple[str, ...] = ()
    inputs: tuple[Path, ...] = ()
    outputs: dict[str, Path] = field(default_factory=dict)
    resume_args: tuple[str, ...] = ()
    clean: tuple[Path, ...] = ()
    nproc: int = DEFAULT_NPROC
    given: bool = False

    def outputs_complete(self) -> bool:
        """Every output path exists."""
        return all(path.exists() for path in self.outputs.values())

    def command_line(self, *, resume: bool = False) -> list[str]:
        """The sadpipe arguments: ``[command, *args]`` (+ ``resume_args``)."""
        return [self.command, *self.args, *(self.resume_args if resume else ())]

    def argv(self, *, resume: bool = False, python: str = sys.executable) -> list[str]:
        """The full process command: ``python -m sadpipe.cli ...``, under torchrun when
        ``nproc > 1``."""
        if self.nproc > 1:
            launcher = [python, "-m", "torch.distributed.run", "--standalone",
                        f"--nproc_per_node={self.nproc}"]
        else:
            launcher = [python]
        return [*launcher, "-m", "sadpipe.cli", *self.command_line(resume=resume)]
