"""``${name}`` references in pipeline strings.

A reference names one value of the pipeline's namespace: ``${workdir}``, ``${pipeline_dir}``,
``${data.KEY}``, ``${vars.KEY}`` or ``${STAGE.OUTPUT}``. ``$$`` is a literal ``$``. A string is
substituted once (values are not themselves expanded); anything else after a ``$`` is an error.
"""
from __future__ import annotations

import re

from sadpipe.config import toml_value

# One token: "$$", or "${" name "}", or a "$" that starts neither (an error).
_TOKEN = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)\}|)")


class BadReference(ValueError):
    """A string names a value that does not exist, or misuses ``$``. ``where`` is filled in by
    the caller (file and key)."""


def substitute(text: str, values: dict[str, str], *, hint=None) -> str:
    """``text`` with every ``${name}`` replaced by ``values[name]``.

    Args:
        text: the template, e.g. ``"data.train_images=${data.train_images}"``.
        values: the namespace, {"data.train_images": "/abs/dir", ...}.
        hint: optional ``hint(name) -> str | None`` giving a better message for an unknown name
            (e.g. "refers to a later stage").

    Raises ``BadReference`` for an unknown name or a stray ``$``.
    """
    def replace(match: re.Match) -> str:
        if match.group(1):
            return "$"
        name = match.group(2)
        if name is None:
            raise BadReference(f"stray '$' in {text!r} (write $$ for a literal $, "
                                  "${name} for a reference)")
        if name not in values:
            extra = hint(name) if hint else None
            raise BadReference(extra or f"unknown reference ${{{name}}} in {text!r}")
        return values[name]

    return _TOKEN.sub(replace, text)


def as_text(value) -> str:
    """A TOML value as it appears on a command line: booleans in TOML spelling, lists as TOML
    (``[700, 900]``, what ``--set solver.steps=...`` reads), strings as they are."""
    if isinstance(value, bool) or isinstance(value, list):
        return toml_value(value)
    return str(value)
