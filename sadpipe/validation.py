"""Checks for values read from TOML and JSON files, and their one-line errors (torch-free).

The errors read ``<where>: <key>: <problem>``: ``where`` names the file (or ``--set``), ``key``
the field, e.g. ``toy.toml: stages[0].nproc (stage 'train'): must be an integer >= 1, got 0``.
"""
from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable, Iterable

from sadpipe.errors import UserError


def type_name(value) -> str:
    """The JSON name of ``value``'s type: object, list, string, boolean, null or number."""
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def show_value(value, limit: int = 60) -> str:
    """``value`` as compact JSON for a one-line message, cut to ``limit`` characters."""
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def is_int(value) -> bool:
    """An integer (not a boolean)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value) -> bool:
    """An integer or a float (not a boolean)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite_number(value) -> bool:
    """A number that is not NaN or infinite."""
    return is_number(value) and math.isfinite(value)


def is_list_of(value, kind: type | tuple) -> bool:
    """A list (maybe empty) whose items are all ``kind`` (``str``: a list of strings)."""
    return isinstance(value, list) and all(isinstance(item, kind) for item in value)


def passes(value, ok: type | tuple | Callable) -> bool:
    """Whether ``value`` passes ``ok``: a type or a tuple of types (isinstance), or a predicate."""
    return isinstance(value, ok) if isinstance(ok, (type, tuple)) else bool(ok(value))


def fail(where: str, key: str, problem: str) -> UserError:
    """The error ``<where>: <key>: <problem>``, to raise."""
    return UserError(f"{where}: {key}: {problem}")


def expect(value, ok: type | tuple | Callable, where: str, key: str, what: str, *,
           show: bool = True):
    """``value`` when it passes ``ok`` (a type, a tuple of types or a predicate); otherwise
    ``<where>: <key>: must be <what>, got <value>`` (without the value when ``show`` is off)."""
    if not passes(value, ok):
        got = f", got {show_value(value)}" if show else ""
        raise fail(where, key, f"must be {what}{got}")
    return value


def check_keys(table: dict, known: Iterable[str], where: str,
               key: Callable[[str], str] = str, *, what: str = "key") -> None:
    """Refuse the first key of ``table`` not in ``known``: ``<where>: <key(name)>: unknown key
    (known: ...)``; ``what`` names such a key (``section``)."""
    known = tuple(known)
    for name in table:
        if name not in known:
            raise fail(where, key(name), f"unknown {what} (known: {', '.join(known)})")
