"""File helpers: atomic output (write to a temporary name in the same folder, then rename),
JSON, content hashes, and reading JSON and TOML files with one-line errors naming the file."""
import contextlib
import hashlib
import json
import os
import tomllib
from pathlib import Path

from sadpipe.errors import UserError


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path, obj, indent=2):
    """Write ``obj`` as JSON to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent) + "\n")


def file_sha256(path) -> str:
    """Hex SHA-256 of a file's content (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_json_file(path):
    """Parse the json file at ``path``; a missing, unreadable or malformed file is a
    ``UserError`` naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, expected a json file") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not valid JSON (not UTF-8 text)") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read file ({err.strerror})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err.msg} at line {err.lineno} "
                        f"column {err.colno})") from None


def load_toml_file(path, what: str = "TOML file") -> dict:
    """Parse the TOML file at ``path``; a missing, unreadable or malformed file is a
    ``UserError`` naming the file and ``what`` it should be (``pipeline file``)."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, expected a {what} (.toml)") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid TOML ({err})") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read file ({err.strerror})") from None
