"""Stage fingerprints: what a stage ran with, as one sha256.

A fingerprint covers the stage's command line and one digest per input:

* a file another stage of the pipeline wrote: that stage's *run token* (its own fingerprint
  plus when it finished), so a rerun of the producer reruns its consumers, recursively;
* any other file: the sha256 of its content (remembered by size and mtime, so a big
  unchanged file is read once);
* any other folder: the sha256 of its file list with sizes and mtimes (image folders of
  100k files are listed, not read).

Paths inside the workdir are written relative to it (``${workdir}/...``), so a moved workdir
keeps its state.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

CHUNK = 1 << 20
WORKDIR_MARK = "${workdir}"


class MissingInput(ValueError):
    """An input path does not exist."""


class InputHasher:
    """Digests of inputs, reusing content hashes of files whose size and mtime are unchanged.

    Args:
        cache: {absolute path: {"size", "mtime_ns", "sha256"}}; updated in place (the runner
            keeps it in state.json).
    """

    def __init__(self, cache: dict | None = None):
        self.cache = {} if cache is None else cache
        self._memo: dict[Path, str] = {}

    def digest(self, path: Path) -> str:
        """``"file:<sha256>"`` or ``"dir:<sha256>"``; ``MissingInput`` if ``path`` is absent."""
        path = Path(path)
        if path not in self._memo:
            if path.is_file():
                self._memo[path] = "file:" + self._file(path)
            elif path.is_dir():
                self._memo[path] = "dir:" + folder_digest(path)
            else:
                raise MissingInput(f"{path} does not exist")
        return self._memo[path]

    def _file(self, path: Path) -> str:
        stat = path.stat()
        key = str(path)
        known = self.cache.get(key)
        if known and known["size"] == stat.st_size and known["mtime_ns"] == stat.st_mtime_ns:
            return known["sha256"]
        sha = file_digest(path)
        self.cache[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha}
        return sha


def file_digest(path) -> str:
    """sha256 (hex) of the file's bytes."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            sha.update(block)
    return sha.hexdigest()


def folder_digest(path) -> str:
    """sha256 (hex) of every file under ``path``: relative name, size, mtime (ns), sorted."""
    path = Path(path)
    sha = hashlib.sha256()
    entries = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in files:
            full = os.path.join(root, name)
            stat = os.stat(full)
            entries.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns))
    for rel, size, mtime in sorted(entries):
        sha.update(f"{rel}\0{size}\0{mtime}\n".encode())
    return sha.hexdigest()


def stage_fingerprint(command_line: list[str], nproc: int, inputs: list[tuple[Path, str]],
                      workdir: Path) -> str:
    """sha256 (hex) of the command line, the process count and ``(input path, digest)`` pairs,
    with the workdir written as ``${workdir}``."""
    record = {
        "command": [relative_to_workdir(arg, workdir) for arg in command_line],
        "nproc": nproc,
        "inputs": [[relative_to_workdir(str(p), workdir), digest] for p, digest in inputs],
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def run_token(fingerprint: str, finished_at: float) -> str:
    """Names one completed run of a stage (what consumers fingerprint)."""
    return hashlib.sha256(f"{fingerprint}@{finished_at!r}".encode()).hexdigest()


def relative_to_workdir(text: str, workdir: Path) -> str:
    """``text`` with the workdir path (as a whole path component) written as ``${workdir}``."""
    pattern = re.escape(str(workdir)) + r"(?=[/\\]|$)"
    return re.sub(pattern, lambda _: WORKDIR_MARK, text)
