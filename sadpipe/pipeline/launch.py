"""Run one stage's command as a child process, its output going to the stage's log."""
from __future__ import annotations

import ctypes
import os
import shlex
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

POLL_S = 0.5
STOP_GRACE_S = 10.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h
LOG_HEADER = "# sadpipe run, "  # starts the line naming the command, at each (re)start


def run_logged(argv: list[str], log: Path, *, append: bool, on_start=None,
               on_tick=None) -> tuple[int, float]:
    """Run ``argv`` with stdout and stderr into ``log``; returns (exit code, seconds).

    Args:
        argv: the full command (``python -m sadpipe.cli ...``).
        log: the log file; a header line names the command and the time.
        append: keep the log's earlier content (a resumed stage) instead of starting it anew.
        on_start: ``on_start(pid)`` once the process exists.
        on_tick: ``on_tick(elapsed_s)`` about twice a second while it runs.

    The child dies with this process (SIGTERM on Linux when the runner is killed), and is
    stopped if the runner is interrupted (Ctrl-C) before the exception propagates.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.monotonic()
    with open(log, "ab" if append else "wb") as out:
        stamp = datetime.now().isoformat(timespec="seconds")
        out.write(f"{LOG_HEADER}{stamp}: {shlex.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env,
                                preexec_fn=_die_with_parent(os.getpid()))
    try:
        if on_start:
            on_start(proc.pid)
        while True:
            try:
                code = proc.wait(timeout=POLL_S)
                break
            except subprocess.TimeoutExpired:
                if on_tick:
                    on_tick(time.monotonic() - start)
    except BaseException:
        _stop(proc)
        raise
    return code, time.monotonic() - start


def _die_with_parent(parent_pid: int):
    """A ``preexec_fn`` asking Linux to send SIGTERM to the child when the runner dies."""
    if not sys.platform.startswith("linux"):
        return None

    def preexec():
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the runner died before prctl took effect
            os._exit(1)

    return preexec


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
