"""``WORKDIR/state.json``: what each stage last ran with, and how it ended.

Per stage: ``status`` (``running`` while its process lives, and after a kill; ``failed``;
``done``), ``fingerprint``, ``command`` (sadpipe arguments), ``mode`` (``fresh`` or
``resume``), ``attempts`` and ``wall_s`` (summed over the attempts of this fingerprint),
``started_at`` / ``finished_at`` (Unix time), ``exit_code``, ``pid``, ``log``, and once done the
``token`` later stages fingerprint. The file is rewritten atomically at every change.
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from sadpipe.errors import UserError
from sadpipe.fileio import load_json_file, write_json
from sadpipe.pipeline.fingerprint import run_token

STATE_FILE = "state.json"
LOCK_FILE = ".run.lock"
LOCK_GRACE_S = 10.0  # a lock file without a pid yet is this young at most
FORMAT = 1
RUNNING, FAILED, DONE = "running", "failed", "done"
FRESH, RESUME = "fresh", "resume"


class RunState:
    """The state file of one workdir (created empty if missing)."""

    def __init__(self, workdir: Path):
        self.path = Path(workdir) / STATE_FILE
        data = {"format": FORMAT, "stages": {}, "file_digests": {}}
        if self.path.exists():
            data = load_json_file(self.path)
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise UserError(f"{self.path}: not a sadpipe run state (format {FORMAT}); "
                                "delete it to run every stage again")
        self.stages: dict[str, dict] = data["stages"]
        self.file_digests: dict[str, dict] = data["file_digests"]

    def record(self, name: str) -> dict | None:
        return self.stages.get(name)

    def start(self, name: str, *, fingerprint: str, command: list[str], mode: str,
              log: Path) -> None:
        previous = self.stages.get(name) or {}
        same = mode == RESUME and previous.get("fingerprint") == fingerprint
        self.stages[name] = {
            "status": RUNNING, "fingerprint": fingerprint, "command": command, "mode": mode,
            "attempts": previous.get("attempts", 0) + 1 if same else 1,
            "wall_s": previous.get("wall_s", 0.0) if same else 0.0,
            "started_at": time.time(), "finished_at": None, "exit_code": None, "pid": None,
            "log": str(log), "token": None,
        }
        self.save()

    def set_pid(self, name: str, pid: int) -> None:
        self.stages[name]["pid"] = pid
        self.save()

    def finish(self, name: str, *, exit_code: int, wall_s: float, ok: bool) -> None:
        record = self.stages[name]
        record.update(status=DONE if ok else FAILED, exit_code=exit_code, finished_at=time.time(),
                      wall_s=round(record["wall_s"] + wall_s, 3), pid=None)
        if ok:
            record["token"] = run_token(record["fingerprint"], record["finished_at"])
        self.save()

    def save(self) -> None:
        write_json(self.path, {"format": FORMAT, "stages": self.stages,
                               "file_digests": self.file_digests})


@contextlib.contextmanager
def workdir_lock(workdir: Path):
    """Hold ``WORKDIR/.run.lock`` (our pid) for the block; refuse a workdir that another live
    ``sadpipe run`` holds. A lock left by a killed run is taken over."""
    path = Path(workdir) / LOCK_FILE
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            pid = _read_pid(path)
            if pid is None and _age_s(path) < LOCK_GRACE_S:  # being written right now
                pid = -1
            if pid is not None and _alive(pid):
                who = "" if pid == -1 else f" (pid {pid})"
                raise UserError(f"{workdir}: in use by another `sadpipe run`{who}; wait "
                                "for it or choose another --workdir") from None
            path.unlink(missing_ok=True)
    else:
        raise UserError(f"{path}: cannot take the workdir lock")
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
        yield
    finally:
        path.unlink(missing_ok=True)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return LOCK_GRACE_S


def _alive(pid: int) -> bool:
    if pid == -1:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
