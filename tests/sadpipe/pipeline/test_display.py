"""The progress display's helpers: the last line a stage printed, durations."""
import pytest

from sadpipe.pipeline.display import StageDisplay, format_duration, last_line, tail_lines


def test_last_line_follows_carriage_return_updates(tmp_path):
    log = tmp_path / "s.log"
    log.write_bytes(b"# header\nloading\ntrain:  10%|#   | 1/10\rtrain:  20%|##  | 2/10\r")
    assert last_line(log) == "train:  20%|##  | 2/10"
    log.write_bytes(b"iteration=20 loss=1.2\n\n  \n")
    assert last_line(log) == "iteration=20 loss=1.2"
    assert last_line(tmp_path / "none.log") == ""
    log.write_text("# sadpipe run, 2026-01-01T00:00:00: python -m sadpipe.cli eval\n")
    assert last_line(log) == ""  # the runner's own header is not the stage's progress


def test_tail_lines_reads_only_the_end(tmp_path):
    log = tmp_path / "s.log"
    log.write_text("".join(f"line {i}\n" for i in range(100_000)))
    assert tail_lines(log, 3) == ["line 99997", "line 99998", "line 99999"]


@pytest.mark.parametrize("seconds, text", [(0, "00:00"), (59.9, "00:59"), (73.4, "01:13"),
                                           (3599, "59:59"), (3725, "1:02:05")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_plain_display_prints_start_and_heartbeat(tmp_path, capsys, monkeypatch):
    log = tmp_path / "s.log"
    log.write_text("iteration=7\n")
    display = StageDisplay(12, interactive=False)
    display.started(2, "teacher", "running sadpipe train")
    display.tick(2, "teacher", 5.0, log)  # before the heartbeat period: nothing
    monkeypatch.setattr("sadpipe.pipeline.display.HEARTBEAT_S", 0.0)
    display.tick(2, "teacher", 65.0, log)
    display.note(2, "teacher", "done in 01:05")
    assert capsys.readouterr().err.splitlines() == [
        "[ 3/12] teacher: running sadpipe train",
        "[ 3/12] teacher: running 01:05  iteration=7",
        "[ 3/12] teacher: done in 01:05"]
