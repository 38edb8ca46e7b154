"""Plain-dict form of the small frozen dataclasses that checkpoints and shard headers record."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path


def plain_dict(obj, *, optional: tuple[str, ...] = ()) -> dict:
    """The fields of dataclass ``obj`` as JSON-able values (tuples become lists).

    Fields named in ``optional`` were added after files were first written: they are left
    out while they hold their default, so a file written before they existed reads, compares
    and hashes exactly as before."""
    out = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.name in optional and value == f.default:
            continue
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def load_tagged(path, *, format_name: str, version: int, what: str, missing: str,
                foreign: str) -> dict:
    """A torch file written by sadpipe, read with ``weights_only=True`` and checked to carry
    ``{"format": format_name, "version": version}``. ``what`` names the kind of file in
    messages; ``missing`` / ``foreign`` end the messages for an absent / foreign file. Every
    problem is a one-line UserError naming ``path``."""
    import torch

    from sadpipe.errors import UserError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {missing}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is a user error here
        raise UserError(f"{path}: not a readable {what} ({type(err).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != format_name:
        raise UserError(f"{path}: {foreign}")
    if payload.get("version") != version:
        raise UserError(f"{path}: {what} version {payload.get('version')} is not supported "
                        f"(expected {version})")
    return payload
