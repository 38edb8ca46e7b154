"""The stages' progress display: plain lines when stderr is not a terminal, a bar when it is."""
import io
import sys

from sadpipe.engine.progress import Progress


def test_plain_lines_about_lines_times(capsys):
    progress = Progress("pseudo-label", total=40, unit="img", noun="images", lines=20)
    for _ in range(40):
        progress.advance(1)
    progress.close()
    err = capsys.readouterr().err.splitlines()
    assert err[:2] == ["pseudo-label: 2/40 images", "pseudo-label: 4/40 images"]
    assert len(err) == 20 and err[-1] == "pseudo-label: 40/40 images"


def test_resumed_run_counts_from_done_and_batches_skip_lines(capsys):
    progress = Progress("cache-logits", unit="img", lines=5)
    progress.start(total=10, done=4)
    progress.advance(1)     # 5: the next line is at 6
    progress.advance(3)     # 8
    progress.advance(2)     # 10
    assert capsys.readouterr().err.splitlines() == ["cache-logits: 8/10 img", "cache-logits: 10/10 img"]


def test_no_lines_asked_or_disabled_prints_nothing(capsys):
    silent = Progress("cache-logits", total=3)      # lines=0: the bar only, on a terminal
    silent.advance(3)
    silent.close()
    disabled = Progress("x", total=3, lines=3, enabled=False)
    disabled.advance(3)
    disabled.log({"iteration": 3, "loss": 0.5})
    disabled.close()
    assert capsys.readouterr().err == ""


def test_log_is_one_plain_line_without_a_bar(capsys):
    progress = Progress("train", total=100)
    progress.log({"iteration": 20, "source": "labeled", "loss": 0.123456, "lr": 0.01})
    progress.advance(1, loss="0.1235")
    assert capsys.readouterr().err == "iteration=20 source=labeled loss=0.1235 lr=0.01\n"


def test_terminal_gets_a_bar_with_its_postfix_and_no_plain_lines(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    progress = Progress("train", total=3, done=1, lines=3)
    progress.log({"iteration": 2})                       # the bar shows it: no line
    progress.advance(1, loss="0.5000")
    progress.advance(1, loss="0.2500")
    progress.close()
    shown = terminal.getvalue()
    assert "train" in shown and "3/3" in shown and "loss=0.2500" in shown
    assert "iteration=2" not in shown and "train: 2/3" not in shown
