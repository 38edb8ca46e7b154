"""Benchmark of the fused losses (not a test): ``python -m cuda_ops.bench``.

For M x C = 110,000 x 80 (one COCO view at short side 600) and 16x that, it times forward +
backward of the sigmoid focal loss and the ADL for: the torch eager reference, torch.compile
of the same reference (compile time excluded, reported apart), numba-cpu, and on a GPU
torch eager / torch.compile / numba-cuda on CUDA tensors. Every row is measured in this one
process, best and median of several repeats (the CPU may be shared), and printed with
elements/s, effective GB/s (the bytes a fused pass must move: read logits (+ teacher probs)
and labels, write the gradient), peak extra memory (CPU: resident-set high-water mark; GPU:
torch's allocator peak) in MB and in gradient buffers, and the speed-up over eager and over
torch.compile. Rows whose predicted memory would not fit are skipped and say so.
"""
import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

import cuda_ops
from cuda_ops import reference
from cuda_ops.constants import NORMALIZER_POWER

SIZES = ((110_000, 80), (1_760_000, 80))
LOSSES = ("focal", "adl")
MB = 1 << 20

FIRST_CALL_SCRIPT = """
import time, torch
import cuda_ops
x = torch.randn(1000, 80, requires_grad=True); q = torch.rand(1000, 80)
labels = torch.randint(-2, 80, (1000,))
start = time.perf_counter()
cuda_ops.sigmoid_focal_loss(x, labels).backward()
cuda_ops.adaptive_distillation_loss(x, q, labels).backward()
cuda_ops.power_sum(q)
print(time.perf_counter() - start)
"""


# --------------------------------------------------------------------------- inputs
def make_inputs(loss, rows, classes, device, seed=0):
    """Logits, teacher probabilities (ADL) and labels shaped like one detector batch."""
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(rows, classes, generator=gen) * 3 - 4).to(device).requires_grad_(True)
    labels = torch.randint(-1, classes, (rows,), generator=gen)
    labels[torch.rand(rows, generator=gen) < 0.9] = -1  # mostly background, as in RetinaNet
    labels[torch.rand(rows, generator=gen) < 0.05] = cuda_ops.IGNORE
    labels = labels.to(device)
    q = None
    if loss == "adl":
        q = (torch.rand(rows, classes, generator=gen) ** 6).to(device)
    return x, q, labels


def ideal_bytes(loss, rows, classes):
    """Bytes a one-pass fused kernel must move: read logits (+ probs) and labels, write grad."""
    per_element = 12 if loss == "adl" else 8
    return rows * classes * per_element + rows * 8


# --------------------------------------------------------------------------- steps
def eager_step(loss):
    """fwd+bwd of the plain torch reference (the functions behind backend="torch")."""
    if loss == "focal":
        return lambda x, q, labels, norm: reference.sigmoid_focal_loss(x, labels, norm)
    return lambda x, q, labels, norm: reference.adaptive_distillation_loss(x, q, labels, norm)


def compiled_step(loss):
    return torch.compile(eager_step(loss), dynamic=False)


def fused_step(loss, backend):
    if loss == "focal":
        return lambda x, q, labels, norm: cuda_ops.sigmoid_focal_loss(
            x, labels, normalizer=norm, backend=backend
        )
    return lambda x, q, labels, norm: cuda_ops.adaptive_distillation_loss(
        x, q, labels, normalizer=norm, backend=backend
    )


def run_once(step, x, q, labels, norm):
    x.grad = None
    step(x, q, labels, norm).backward()


# --------------------------------------------------------------------------- measuring
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(step, inputs, device, repeats):
    """(best, median) seconds of fwd+bwd over ``repeats`` runs after one warm-up."""
    run_once(step, *inputs)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        run_once(step, *inputs)
        _sync(device)
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def _status_kb(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def peak_extra_bytes(step, inputs, device):
    """Peak memory above the live inputs during one fwd+bwd (the new gradient included)."""
    inputs[0].grad = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run_once(step, *inputs)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset the resident-set high-water mark (Linux >= 4.0)
    except OSError:
        return None
    before = _status_kb("VmRSS")
    run_once(step, *inputs)
    return (_status_kb("VmHWM") - before) * 1024


def available_bytes():
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def first_call_seconds():
    """Seconds of the first fused calls in a fresh interpreter (numba's cache already warm)."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    run = subprocess.run([sys.executable, "-c", FIRST_CALL_SCRIPT], capture_output=True,
                         text=True, env=env, cwd=os.getcwd(), timeout=600)
    return float(run.stdout.strip().splitlines()[-1]) if run.returncode == 0 else None


# --------------------------------------------------------------------------- table
def implementations(device):
    """(name, step factory) rows for a device."""
    rows = [("torch eager", eager_step), ("torch.compile", compiled_step)]
    fused = "numba-cuda" if device.type == "cuda" else "numba-cpu"
    rows.append((fused, lambda loss: fused_step(loss, fused)))
    return rows


def bench_case(loss, rows, classes, device, repeats, predicted_peak):
    """Measure every implementation for one (loss, size, device); returns result dicts."""
    inputs = make_inputs(loss, rows, classes, device)
    norm = float(max(int((inputs[2] >= 0).sum()), 1)) if loss == "focal" else float(
        max(float((inputs[1].double() ** NORMALIZER_POWER).sum()), 1.0)
    )
    grad_bytes = rows * classes * 4
    results = []
    for name, factory in implementations(device):
        budget = available_bytes()
        need = predicted_peak.get((loss, name, device.type))
        if need is not None and budget is not None and need * rows > 0.8 * budget:
            results.append(dict(name=name, skipped=f"needs ~{need * rows / 2**30:.1f} GiB, "
                                                   f"{budget / 2**30:.1f} GiB available"))
            continue
        step = factory(loss)
        compile_s = None
        if name == "torch.compile":
            start = time.perf_counter()
            run_once(step, *inputs, norm)
            compile_s = time.perf_counter() - start
        best, median = time_step(step, (*inputs, norm), device, repeats)
        peak = peak_extra_bytes(step, (*inputs, norm), device)
        if peak is not None:
            predicted_peak[(loss, name, device.type)] = peak / rows
        results.append(dict(name=name, best=best, median=median, peak=peak,
                            grad_bytes=grad_bytes, compile_s=compile_s))
    del inputs
    return results


def print_table(loss, rows, classes, device, results):
    elements = rows * classes
    moved = ideal_bytes(loss, rows, classes)
    by_name = {r["name"]: r for r in results if "best" in r}
    eager = by_name.get("torch eager")
    compiled = by_name.get("torch.compile")
    print(f"\n{loss.upper()}  M x C = {rows:,} x {classes} = {elements / 1e6:.1f} M elements, "
          f"device {device.type}, ideal traffic {moved / 1e6:.0f} MB")
    print(f"  {'implementation':<15}{'best ms':>9}{'median ms':>11}{'Gelem/s':>9}{'GB/s':>7}"
          f"{'peak extra MB':>15}{'x grad buf':>11}{'x eager':>9}{'x compile':>11}")
    for r in results:
        if "skipped" in r:
            print(f"  {r['name']:<15} skipped: {r['skipped']}")
            continue
        peak = "n/a" if r["peak"] is None else f"{r['peak'] / MB:.0f}"
        bufs = "n/a" if r["peak"] is None else f"{r['peak'] / r['grad_bytes']:.2f}"
        vs_eager = f"{eager['best'] / r['best']:.2f}" if eager else "n/a"
        vs_compile = f"{compiled['best'] / r['best']:.2f}" if compiled else "n/a"
        print(f"  {r['name']:<15}{r['best'] * 1e3:>9.1f}{r['median'] * 1e3:>11.1f}"
              f"{elements / r['best'] / 1e9:>9.2f}{moved / r['best'] / 1e9:>7.1f}{peak:>15}{bufs:>11}"
              f"{vs_eager:>9}{vs_compile:>11}")
    if compiled and compiled.get("compile_s") is not None:
        print(f"  (torch.compile's first fwd+bwd, compiling included: {compiled['compile_s']:.1f} s)")


def gpu_peak_bandwidth(device):
    """Theoretical DRAM bandwidth in bytes/s from the device attributes, or None."""
    try:
        from numba import cuda

        with cuda.gpus[device.index or 0]:
            dev = cuda.get_current_device()
            return 2 * dev.MEMORY_CLOCK_RATE * 1e3 * dev.GLOBAL_MEMORY_BUS_WIDTH / 8
    except Exception:  # attribute names differ between drivers: report without it
        return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per row (default 5)")
    parser.add_argument("--sizes", choices=("both", "small", "large"), default="both",
                        help="110,000 x 80, 16x that, or both (default)")
    parser.add_argument("--losses", nargs="+", choices=LOSSES, default=list(LOSSES))
    parser.add_argument("--no-gpu", action="store_true", help="skip the GPU rows")
    args = parser.parse_args(argv)
    sizes = {"both": SIZES, "small": SIZES[:1], "large": SIZES[1:]}[args.sizes]

    import numba

    print(f"cuda_ops bench: {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"numba {numba.__version__} ({numba.get_num_threads()} threads), "
          f"best of {args.repeats} after a warm-up")
    first = first_call_seconds()
    print(f"first fused calls in a fresh process (cache warm): "
          f"{'failed' if first is None else f'{first:.2f} s'}")
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.no_gpu:
        devices.append(torch.device("cuda"))
    else:
        print("no GPU here: numba-cuda rows skipped")
    predicted_peak = {}
    for device in devices:
        for rows, classes in sizes:
            for loss in args.losses:
                results = bench_case(loss, rows, classes, device, args.repeats, predicted_peak)
                print_table(loss, rows, classes, device, results)
                if device.type == "cuda":
                    peak_bw = gpu_peak_bandwidth(device)
                    fused = next((r for r in results if r["name"] == "numba-cuda" and "best" in r), None)
                    if peak_bw and fused:
                        reached = ideal_bytes(loss, rows, classes) / fused["best"] / peak_bw
                        print(f"  numba-cuda reaches {reached:.0%} of the card's "
                              f"{peak_bw / 1e9:.0f} GB/s theoretical bandwidth")
                sys.stdout.flush()


if __name__ == "__main__":
    main()
