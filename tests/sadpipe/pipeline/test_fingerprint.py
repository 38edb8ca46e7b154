"""Fingerprints, the state file and the skip/resume/fresh decision."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sadpipe.errors import UserError
from sadpipe.pipeline.fingerprint import (
    InputHasher,
    MissingInput,
    file_digest,
    folder_digest,
    relative_to_workdir,
    stage_fingerprint,
)
from sadpipe.pipeline.runner import decide
from sadpipe.pipeline.stage import Stage
from sadpipe.pipeline.state import DONE, FAILED, FRESH, RESUME, RUNNING, RunState, workdir_lock


def test_file_digest_is_sha256_of_content(tmp_path):
    path = tmp_path / "f.bin"
    data = os.urandom(3 * (1 << 20) + 17)  # spans several read chunks
    path.write_bytes(data)
    assert file_digest(path) == hashlib.sha256(data).hexdigest()


def test_folder_digest_follows_names_sizes_and_times(tmp_path):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.jpg").write_bytes(b"aaaa")
    (folder / "sub" / "b.jpg").write_bytes(b"bb")
    first = folder_digest(folder)
    assert folder_digest(folder) == first
    os.utime(folder / "a.jpg", ns=(1, 1_000_000_000))
    touched = folder_digest(folder)
    assert touched != first
    (folder / "sub" / "b.jpg").write_bytes(b"bbb")
    os.utime(folder / "sub" / "b.jpg", ns=(1, 1_000_000_000))
    resized = folder_digest(folder)
    assert resized != touched
    (folder / "c.jpg").write_bytes(b"")
    assert folder_digest(folder) != resized


def test_hasher_reuses_content_hash_while_size_and_mtime_hold(tmp_path):
    path = tmp_path / "big.json"
    path.write_bytes(b"12345")
    cache = {}
    assert InputHasher(cache).digest(path) == "file:" + hashlib.sha256(b"12345").hexdigest()
    assert cache[str(path)]["size"] == 5
    stat = path.stat()
    path.write_bytes(b"54321")  # same size; restore the mtime: the remembered hash is used
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert InputHasher(cache).digest(path) == "file:" + hashlib.sha256(b"12345").hexdigest()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert InputHasher(cache).digest(path) == "file:" + hashlib.sha256(b"54321").hexdigest()
    with pytest.raises(MissingInput):
        InputHasher().digest(tmp_path / "none")


def test_stage_fingerprint_covers_command_nproc_inputs_not_workdir_location(tmp_path):
    a, b = Path("/runs/a"), Path("/runs/b")
    inputs_a = [(a / "data" / "train.json", "stage:t1"), (Path("/cfg.toml"), "file:x")]
    inputs_b = [(b / "data" / "train.json", "stage:t1"), (Path("/cfg.toml"), "file:x")]
    base = stage_fingerprint(["train", "--out", f"{a}/teacher"], 1, inputs_a, a)
    assert base == stage_fingerprint(["train", "--out", f"{b}/teacher"], 1, inputs_b, b)
    assert base != stage_fingerprint(["train", "--out", f"{a}/teacher", "--x"], 1, inputs_a, a)
    assert base != stage_fingerprint(["train", "--out", f"{a}/teacher"], 2, inputs_a, a)
    changed = [inputs_a[0], (Path("/cfg.toml"), "file:y")]
    assert base != stage_fingerprint(["train", "--out", f"{a}/teacher"], 1, changed, a)
    produced_again = [(a / "data" / "train.json", "stage:t2"), inputs_a[1]]
    assert base != stage_fingerprint(["train", "--out", f"{a}/teacher"], 1, produced_again, a)


def test_relative_to_workdir_replaces_whole_components_only():
    workdir = Path("/tmp/w")
    assert relative_to_workdir("/tmp/w/teacher", workdir) == "${workdir}/teacher"
    assert relative_to_workdir("x=/tmp/w", workdir) == "x=${workdir}"
    assert relative_to_workdir("/tmp/work2/x", workdir) == "/tmp/work2/x"


@pytest.mark.parametrize("status, same, complete, expected", [
    (None, True, True, FRESH),
    (DONE, True, True, None),
    (DONE, True, False, FRESH),
    (DONE, False, True, FRESH),
    (RUNNING, True, False, RESUME),
    (FAILED, True, False, RESUME),
    (RUNNING, False, False, FRESH),
])
def test_decide(tmp_path, status, same, complete, expected):
    out = tmp_path / "model.pt"
    if complete:
        out.write_bytes(b"")
    stage = Stage(name="s", command="train", outputs={"model": out})
    record = None if status is None else {"status": status, "fingerprint": "f" if same else "g"}
    assert decide(stage, record, "f") == expected


def test_state_resume_accumulates_attempts_and_time(tmp_path):
    state = RunState(tmp_path)
    log = tmp_path / "logs" / "s.log"
    state.start("s", fingerprint="f", command=["train"], mode=FRESH, log=log)
    state.finish("s", exit_code=-9, wall_s=2.0, ok=False)
    state.start("s", fingerprint="f", command=["train", "--resume"], mode=RESUME, log=log)
    state.finish("s", exit_code=0, wall_s=3.0, ok=True)
    record = RunState(tmp_path).record("s")  # as read back from disk
    assert record["status"] == DONE and record["attempts"] == 2 and record["wall_s"] == 5.0
    assert record["command"] == ["train", "--resume"] and record["token"]
    state.start("s", fingerprint="g", command=["train"], mode=FRESH, log=log)
    assert state.record("s")["attempts"] == 1 and state.record("s")["wall_s"] == 0.0


def test_state_is_written_atomically(tmp_path, monkeypatch):
    state = RunState(tmp_path)
    state.start("s", fingerprint="f", command=["train"], mode=FRESH, log=tmp_path / "l")
    before = (tmp_path / "state.json").read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("sadpipe.fileio.os.replace", broken_replace)
    with pytest.raises(OSError):
        state.finish("s", exit_code=0, wall_s=1.0, ok=True)
    assert (tmp_path / "state.json").read_bytes() == before
    assert json.loads(before)["stages"]["s"]["status"] == RUNNING
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left


def test_corrupt_state_file_is_a_user_error(tmp_path):
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(UserError, match="state.json: not valid JSON"):
        RunState(tmp_path)
    (tmp_path / "state.json").write_text('{"format": 99}')
    with pytest.raises(UserError, match="not a sadpipe run state"):
        RunState(tmp_path)


def test_workdir_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    with workdir_lock(tmp_path):
        with pytest.raises(UserError, match="in use by another `sadpipe run`"):
            with workdir_lock(tmp_path):
                pass
    assert not (tmp_path / ".run.lock").exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / ".run.lock").write_text(dead + "\n")
    with workdir_lock(tmp_path):
        assert (tmp_path / ".run.lock").read_text().strip() == str(os.getpid())
