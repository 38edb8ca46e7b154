"""Progress of a pipeline run, one stage at a time.

On a terminal: one live line per stage, ``[3/11] teacher (train)  ⠹ 02:13  <the last line the
stage printed>``, rewritten twice a second. Elsewhere (CI logs, files): a line when a stage
starts and ends, and a heartbeat with the stage's last printed line every minute.
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import click

from sadpipe.pipeline.launch import LOG_HEADER

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
HEARTBEAT_S = 60.0
TAIL_BYTES = 4096


class StageDisplay:
    def __init__(self, total: int, *, interactive: bool | None = None):
        self.total = total
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self._ticks = 0
        self._last_beat = 0.0

    def prefix(self, index: int, name: str) -> str:
        width = len(str(self.total))
        return f"[{index + 1:>{width}}/{self.total}] {name}"

    def note(self, index: int, name: str, text: str) -> None:
        """A finished line: skipped, given, done, failed."""
        self._clear()
        click.echo(f"{self.prefix(index, name)}: {text}", err=True)

    def started(self, index: int, name: str, text: str) -> None:
        self._ticks, self._last_beat = 0, time.monotonic()
        if not self.interactive:
            click.echo(f"{self.prefix(index, name)}: {text}", err=True)

    def tick(self, index: int, name: str, elapsed: float, log: Path) -> None:
        """Called while the stage runs."""
        self._ticks += 1
        if self.interactive:
            line = f"{self.prefix(index, name)} {SPINNER[self._ticks % len(SPINNER)]} " \
                   f"{format_duration(elapsed)}  {last_line(log)}"
            width = shutil.get_terminal_size((100, 20)).columns - 1
            click.echo(f"\r\033[K{line[:width]}", nl=False, err=True)
        elif time.monotonic() - self._last_beat >= HEARTBEAT_S:
            self._last_beat = time.monotonic()
            click.echo(f"{self.prefix(index, name)}: running {format_duration(elapsed)}  "
                       f"{last_line(log)}", err=True)

    def _clear(self) -> None:
        if self.interactive:
            click.echo("\r\033[K", nl=False, err=True)


def last_line(log: Path) -> str:
    """The last non-empty line of ``log`` (tqdm's ``\\r`` updates count as lines)."""
    lines = [line for line in _tail(log, TAIL_BYTES) if not line.startswith(LOG_HEADER)]
    return lines[-1].strip() if lines else ""


def tail_lines(log: Path, count: int) -> list[str]:
    """The last ``count`` non-empty lines of ``log`` (shown for a failed stage)."""
    return _tail(log, TAIL_BYTES * 4)[-count:]


def _tail(log: Path, limit: int) -> list[str]:
    try:
        with open(log, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - limit))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return [line.rstrip() for line in text.replace("\r", "\n").split("\n") if line.strip()]


def format_duration(seconds: float) -> str:
    """``73.4`` → ``01:13``; ``3725`` → ``1:02:05``."""
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"
