"""Progress of a long loop on stderr: a tqdm bar on a terminal, plain lines otherwise.

The one progress display of the stages (``train``, ``pseudo-label``, ``cache-logits``). On a
terminal it is a tqdm bar; when stderr is a file or a pipe (CI, a pipeline's stage log) a bar
would be a stream of ``\\r`` updates, so it prints plain lines instead: about ``lines`` of
``desc: done/total noun`` over the run, and whatever records the caller hands to
:meth:`Progress.log`.
"""
from __future__ import annotations

import sys

import click
from tqdm import tqdm


class Progress:
    """Progress of ``total`` steps (images, iterations) under the label ``desc``.

    Args:
        desc: the bar's label and the plain lines' prefix.
        total: steps of the whole run; None to give it (and the steps already done) later
            with :meth:`start`, when it is known only after some setup.
        done: steps already done (a resumed run): the bar starts there.
        unit: the bar's unit ("it", "img").
        noun: what the plain lines count ("images"); default ``unit``.
        lines: about this many plain ``desc: done/total noun`` lines over the run when stderr
            is not a terminal; 0 prints none.
        enabled: False shows nothing (ranks other than the main one, ``--quiet``).
    """

    def __init__(self, desc: str, *, total: int | None = None, done: int = 0, unit: str = "it",
                 noun: str | None = None, lines: int = 0, enabled: bool = True):
        self.desc, self.unit, self.noun = desc, unit, noun or unit
        self.lines, self.enabled = lines, enabled
        self.bar = None
        self.total = self.done = self.every = self.next_line = 0
        if total is not None:
            self.start(total=total, done=done)

    def start(self, *, total: int, done: int = 0) -> None:
        """Begin the display: ``total`` steps, of which ``done`` are already done."""
        self.total, self.done = total, done
        if self.enabled and sys.stderr.isatty():
            self.bar = tqdm(total=total, initial=done, desc=self.desc, unit=self.unit,
                            dynamic_ncols=True)
        if self.lines:
            self.every = max(1, total // self.lines)
            self.next_line = (done // self.every + 1) * self.every

    def advance(self, n: int = 1, **postfix) -> None:
        """``n`` more steps done; ``postfix`` (e.g. ``loss="0.1234"``) is shown after the bar."""
        self.done += n
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(n)
        elif self.enabled and self.every and self.done >= self.next_line:
            click.echo(f"{self.desc}: {self.done}/{self.total} {self.noun}", err=True)
            self.next_line = (self.done // self.every + 1) * self.every

    def log(self, record: dict) -> None:
        """One plain ``key=value ...`` line of ``record`` when there is no bar (CI logs, files)."""
        if self.enabled and self.bar is None:
            items = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in record.items())
            click.echo(items, err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
