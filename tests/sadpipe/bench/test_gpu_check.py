"""`python -m sadpipe.bench.gpu_check`: its one-line refusal without CUDA, and its dry run on
CPU (every check, tiny sizes), whose rows must all pass; a mismatch exits 1."""
import pytest
import torch
from click.testing import CliRunner

from sadpipe.bench import gpu_check
from sadpipe.bench.gpu_check import Row, command, pseudo_difference, relative_error, table

DRY_RUN = ["--device", "cpu", "--compile-backend", "eager"]


def test_without_cuda_one_line_and_exit_2(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(command, [])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "gpu_check: no CUDA device here (torch.cuda.is_available() is False); --device cpu runs the "
        "same steps on CPU at tiny sizes"]


def _rows(output: str) -> list[list[str]]:
    lines = [line for line in output.splitlines() if line.startswith("| ") and "---" not in line]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def test_dry_run_passes_every_check(tmp_path):
    result = CliRunner().invoke(command, DRY_RUN + ["--workdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    assert {row[0] for row in rows} == set(gpu_check.CHECKS)
    assert all(row[4] in ("ok", "—") for row in rows), result.output
    whats = [row[1] for row in rows]
    for fragment in ("focal 1,000 x 10: numba-cpu vs float64", "power sum 64 x 8",
                     "adl 1,000 x 10: fwd + bwd",
                     "toy_student bf16: 2 steps x 2 images", "resnet50 fp32: 1 step x 2 images",
                     "cache-logits bf16: 4 views", "pseudo-label fp32: 2 images",
                     "one DistributedDataParallel step, 1 process (gloo)"):
        assert any(fragment in what for what in whats), fragment
    speed = next(row[2] for row in rows if row[0] == "speed")
    assert "numba-cpu" in speed and "eager" in speed and "torch.compile[eager]" in speed
    assert result.output.strip().splitlines()[-1].startswith(f"gpu_check: 0 mismatches in {len(rows)} rows")


def test_a_mismatch_exits_1(monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_check, "KERNEL_RTOL", 0.0)   # no float32 kernel equals float64
    result = CliRunner().invoke(command, DRY_RUN + ["--only", "kernels", "--workdir", str(tmp_path)])
    assert result.exit_code == 1
    rows = _rows(result.output)
    assert rows and all(row[0] == "kernels" and row[4] == "**MISMATCH**" for row in rows)


def test_a_check_that_raises_is_a_failing_row(monkeypatch, tmp_path):
    def broken(ctx):
        raise RuntimeError("CUDA error: no kernel image is available\nsecond line")

    monkeypatch.setitem(gpu_check.CHECKS, "ddp", broken)
    result = CliRunner().invoke(command, DRY_RUN + ["--only", "ddp", "--workdir", str(tmp_path)])
    assert result.exit_code == 1
    assert _rows(result.output) == [["ddp", "did not complete",
                                     "RuntimeError: CUDA error: no kernel image is available", "",
                                     "**MISMATCH**"]]


def test_comparisons():
    reference = torch.tensor([1.0, -100.0, 0.0])
    # relative to max(|reference|, 1 % of its largest): the zero element is judged against 1
    assert relative_error(torch.tensor([1.0, -100.0, 0.5]), reference) == 0.5
    assert relative_error(torch.tensor([1.1, -100.0, 0.0]), reference) == pytest.approx(0.1, rel=1e-6)
    ref = gpu_check.TeacherRun({1: [0.9, 0.6], 2: [0.7], 3: []}, 3, 1.0)
    run = gpu_check.TeacherRun({1: [0.91, 0.58], 2: [0.7, 0.5], 3: []}, 3, 1.0)
    changed, largest = pseudo_difference(run, ref)
    assert changed == 1 / 3 and abs(largest - 0.02) < 1e-12
    assert table([Row("a", "b", "c", "<= 1", True)])[-1] == "| a | b | c | <= 1 | ok |"
