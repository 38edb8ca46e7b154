"""Plain-dict form of the small frozen dataclasses that checkpoints and shard headers record."""
from __future__ import annotations

from dataclasses import fields


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
