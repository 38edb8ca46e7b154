"""Progress display: a tqdm bar on a terminal, plain log lines otherwise."""
from __future__ import annotations

import sys

import click
from tqdm import tqdm


class Progress:
    def __init__(self, *, total: int, start: int = 0, enabled: bool = True, desc: str = "train"):
        self.enabled = enabled
        self.bar = None
        if enabled and sys.stderr.isatty():
            self.bar = tqdm(total=total, initial=start, desc=desc, dynamic_ncols=True)

    def update(self, step: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            self.bar.refresh()

    def log(self, step: int, record: dict) -> None:
        """Plain line for non-terminals (CI logs, files)."""
        if self.enabled and self.bar is None:
            items = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in record.items())
            click.echo(items, err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
