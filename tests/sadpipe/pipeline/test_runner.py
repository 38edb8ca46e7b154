"""`sadpipe run` on a tiny real pipeline (toy-data -> train -> eval, each a subprocess):
outputs and report, skip when unchanged, --only / --from, resume after SIGKILL, rerun when an
input file changes, stop at the first failure with the log path."""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

from tests.sadpipe.pipeline.conftest import STAGES, read_state, run_cli, write_tiny_pipeline


def _mtimes(workdir):
    return {name: os.stat(path).st_mtime_ns for name, path in {
        "data": workdir / "data" / "annotations" / "train.json",
        "train": workdir / "train" / "model_final.pt",
        "eval": workdir / "eval" / "metrics.json"}.items()}


def _changed(before, after):
    return sorted(name for name in before if before[name] != after[name])


def test_first_run_outputs_state_logs_and_report(completed):
    pipeline, workdir = completed
    state = read_state(workdir)
    assert list(state) == list(STAGES)
    for name in STAGES:
        record = state[name]
        assert record["status"] == "done" and record["exit_code"] == 0 and record["token"]
        assert record["mode"] == "fresh" and record["attempts"] == 1 and record["wall_s"] > 0
        log = (workdir / "logs" / f"{name}.log").read_text()
        assert log.startswith("# sadpipe run, ") and f"-m sadpipe.cli {record['command'][0]}" in log
    assert state["train"]["command"][-2:] == ["--set", "solver.max_iter=4"]
    iterations = [json.loads(line)["iteration"]
                  for line in (workdir / "train" / "metrics.jsonl").read_text().splitlines()]
    assert iterations == [1, 2, 3, 4]
    assert "COCO box metrics" in (workdir / "logs" / "eval.log").read_text()

    report = json.loads((workdir / "report.json").read_text())
    eval_metrics = json.loads((workdir / "eval" / "metrics.json").read_text())
    metrics = eval_metrics["bbox"]
    speed = eval_metrics.get("inference", {}).get("images_per_s")
    for role, name in (("teacher", "tiny A"), ("baseline", "tiny B"), ("distilled", "tiny C")):
        assert report["models"][role] == {"model": name, "stage": "eval",
                                          **{k: metrics[k] for k in
                                             ("AP", "AP50", "AP75", "APs", "APm", "APl")},
                                          "images_per_s": speed}
    assert report["main_results"]["student_distilled_AP"] == metrics["AP"]
    assert [(r["name"], r["wall_s"]) for r in report["stages"]] == \
        [(name, state[name]["wall_s"]) for name in STAGES]
    assert report["caches"] == {}
    assert "| Student model | Baseline mAP | Teacher model |" in (workdir / "report.md").read_text()
    assert (workdir / "pr_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert not (workdir / ".run.lock").exists()


def test_second_run_skips_every_stage(workdir_copy):
    pipeline, workdir = workdir_copy
    before, state_before = _mtimes(workdir), read_state(workdir)
    logs = {p.name: p.stat().st_mtime_ns for p in (workdir / "logs").iterdir()}
    result = run_cli(pipeline, workdir)
    assert result.exit_code == 0, result.output
    assert result.output.count("up to date, skipped") == 3 and "0 of 3 stages ran" in result.output
    assert _changed(before, _mtimes(workdir)) == []
    assert logs == {p.name: p.stat().st_mtime_ns for p in (workdir / "logs").iterdir()}
    after = read_state(workdir)
    assert {n: after[n]["token"] for n in STAGES} == {n: state_before[n]["token"] for n in STAGES}


def test_only_reruns_one_stage_and_later_stages_follow_it(workdir_copy):
    pipeline, workdir = workdir_copy
    before = _mtimes(workdir)
    result = run_cli(pipeline, workdir, "--only", "train")
    assert result.exit_code == 0, result.output
    assert "report not updated (--only)" in result.output
    assert _changed(before, _mtimes(workdir)) == ["train"]
    # eval read the old train run: the next plain run redoes it, and only it
    middle = _mtimes(workdir)
    result = run_cli(pipeline, workdir)
    assert result.exit_code == 0, result.output
    assert _changed(middle, _mtimes(workdir)) == ["eval"]
    assert "1 of 3 stages ran" in result.output


def test_from_forces_that_stage_and_later_ones(workdir_copy):
    pipeline, workdir = workdir_copy
    before = _mtimes(workdir)
    result = run_cli(pipeline, workdir, "--from", "eval")
    assert result.exit_code == 0, result.output
    assert _changed(before, _mtimes(workdir)) == ["eval"]
    assert read_state(workdir)["eval"]["mode"] == "fresh"
    bad = run_cli(pipeline, workdir, "--from", "evaluate")
    assert bad.exit_code == 1 and "--from: no stage 'evaluate'" in bad.output


def test_resume_after_sigkill_then_rerun_on_changed_input_then_stop_at_failure(
        workdir_copy, tmp_path):
    _, workdir = workdir_copy
    # Own copy of the pipeline: a different config path, so train runs afresh (data is kept).
    pipeline = write_tiny_pipeline(tmp_path / "own")
    runner = subprocess.Popen(
        [sys.executable, "-m", "sadpipe.cli", "run", str(pipeline), "--workdir", str(workdir),
         "--set", "vars.iters=8"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = workdir / "train" / "checkpoints" / "iter_0000004.pt"
    deadline = time.time() + 300
    while not checkpoint.exists():
        assert runner.poll() is None and time.time() < deadline, "train ended before iteration 4"
        time.sleep(0.01)
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    record = read_state(workdir)["train"]
    assert record["status"] == "running" and record["pid"]
    _wait_gone(record["pid"])  # the stage process died with the runner
    assert not (workdir / "train" / "model_final.pt").exists()

    result = run_cli(pipeline, workdir, "--set", "vars.iters=8")
    assert result.exit_code == 0, result.output
    assert "[1/3] data: up to date, skipped" in result.output
    assert "[2/3] train: resuming sadpipe train" in result.output
    record = read_state(workdir)["train"]
    assert record["mode"] == "resume" and record["attempts"] == 2
    assert record["command"][-1] == "--resume"
    log = (workdir / "logs" / "train.log").read_text()
    assert log.count("# sadpipe run, ") == 2 and "--resume" in log  # appended, not overwritten
    iterations = [json.loads(line)["iteration"]
                  for line in (workdir / "train" / "metrics.jsonl").read_text().splitlines()]
    assert iterations == list(range(1, 9))
    eval_log = (workdir / "logs" / "eval.log").stat().st_mtime_ns

    # Same path, new content: train is fingerprinted by content, so it runs again (afresh,
    # its folder cleaned) -- and fails on the bad value; eval does not run.
    config = tmp_path / "own" / "tiny_train.toml"
    config.write_text(config.read_text().replace("base_lr = 0.01", 'base_lr = "fast"'))
    result = run_cli(pipeline, workdir, "--set", "vars.iters=8")
    log_path = workdir / "logs" / "train.log"
    assert result.exit_code == 1
    assert f"Error: stage train failed (exit 1); log: {log_path}" in result.output
    assert "[2/3] train: running sadpipe train" in result.output
    assert "expects float" in log_path.read_text()
    assert not (workdir / "train" / "model_final.pt").exists()
    state = read_state(workdir)
    assert state["train"]["status"] == "failed" and state["train"]["exit_code"] == 1
    assert (workdir / "logs" / "eval.log").stat().st_mtime_ns == eval_log
    assert state["eval"]["status"] == "done"  # its earlier run; the fingerprint will differ


def test_missing_input_is_refused_before_anything_runs(tmp_path):
    pipeline = write_tiny_pipeline(tmp_path / "p")
    (tmp_path / "p" / "tiny_train.toml").unlink()
    result = run_cli(pipeline, tmp_path / "w")
    assert result.exit_code == 1
    config = tmp_path / "p" / "tiny_train.toml"
    assert f"stage train: input {config} does not exist" in result.output
    assert not (tmp_path / "w" / "data").exists() and not (tmp_path / "w" / "state.json").exists()


def test_unavailable_command_is_refused_before_anything_runs(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "sadpipe.commands.evaluate" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    result = run_cli(write_tiny_pipeline(tmp_path / "p"), tmp_path / "w")
    assert result.exit_code == 1
    assert "stage eval: command 'eval' is not available" in result.output
    assert not (tmp_path / "w" / "data").exists()


def _wait_gone(pid, timeout=30.0):
    """Wait until ``pid`` has exited (a zombie waiting for its new parent counts as exited)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except FileNotFoundError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError(f"stage process {pid} outlived the killed runner")
