"""Pipelines shipped with sadpipe, found by name (``toy_sad``) as well as by path.

They live in the repository's ``pipelines/`` folder; ``sadpipe/pipelines`` is a symlink to it,
so the package finds them from a checkout or an editable install, and a wheel built from the
checkout carries them as package data (``*.toml``).
"""
from __future__ import annotations

import tomllib
from pathlib import Path

from sadpipe.errors import UserError

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "pipelines"
DEMO_PIPELINE = "toy_sad"


def shipped_pipelines() -> dict[str, Path]:
    """{name: path} of the shipped pipeline files (TOML with a ``[pipeline]`` table; the
    train configs next to them are left out)."""
    found = {}
    for path in sorted(SHIPPED_DIR.glob("*.toml")):
        try:
            if "pipeline" in tomllib.loads(path.read_text(encoding="utf-8")):
                found[path.stem] = path
        except (OSError, tomllib.TOMLDecodeError):
            continue
    return found


def find_pipeline(name_or_path: str) -> Path:
    """A pipeline file: ``name_or_path`` itself if it exists, else the shipped pipeline of that
    name (``toy_sad`` or ``toy_sad.toml``)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = shipped_pipelines()
    name = path.name.removesuffix(".toml")
    if path.parent == Path(".") and name in shipped:
        return shipped[name]
    raise UserError(f"{name_or_path}: no such pipeline file, and no shipped pipeline of that "
                    f"name (shipped: {', '.join(shipped) or 'none'})")
