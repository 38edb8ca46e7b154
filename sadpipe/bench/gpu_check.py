"""One command for a bare CUDA machine: does sadpipe's GPU path work, and how fast is it
(issue 19). A check and a measurement, not a test::

    python -m sadpipe.bench.gpu_check                  # on cuda:0; exit 2 without CUDA
    python -m sadpipe.bench.gpu_check --device cpu     # dry run: the same steps, on CPU, tiny

Five checks, one table (markdown, so it can go into the README as printed):

1. ``kernels``: the fused losses of ``cuda_ops`` (focal, ADL, the ADL normaliser's power sum)
   on the device (numba-cuda; numba-cpu in the dry run) against the float64 torch reference,
   loss and gradient, at several sizes up to 1.76M x 80.
2. ``speed``: the fused losses against torch eager and ``torch.compile`` of the reference
   (forward + backward, best of a few).
3. ``train``: a toy student (``pipelines/toy_student.toml``, the zoo's pretrained body) and a
   R-50 student (untrained: a bare machine has no ImageNet weights) trained a few dozen steps
   on the device in fp32 and in bf16 (``solver.amp``): images/s, and for the toy student the
   losses of every step against the same run in fp32 on CPU.
4. ``teacher``: ``cache-logits`` and ``pseudo-label`` with the zoo teacher on the device, fp32
   and bf16 (``--precision``): views/s and images/s, each against the fp32 run on CPU (the
   cached normalisers; the pseudo-boxes).
5. ``ddp``: one DistributedDataParallel step in one process (NCCL; gloo on CPU): its
   gradient against the plain model's.

Data: a few toy images generated in ``--workdir`` (default: a temporary folder, removed).
A check that raises is one failing row; the others still run. Exit status: 0 when every row
with a limit is within it, 1 otherwise, 2 without CUDA (one line).
"""
from __future__ import annotations

import copy
import json
import math
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import click
import torch

from cuda_ops.constants import AMP_OFF, FP32

EXIT_MISMATCH, EXIT_NO_CUDA = 1, 2
LOSSES = ("focal", "adl")
PRECISIONS = (FP32, "bf16")     # what the train and teacher checks run at
WARMUP_STEPS = 2                # training steps left out of images/s (allocation, autotuning)

# Limits. Fused float32 kernels against the float64 reference: the test suite's tolerance
# (tests/cuda_ops/conftest.py), per element relative to max(|reference|, 1 % of its largest).
KERNEL_RTOL = 1e-4
# One DDP process against the plain model: the same sums (an all-reduce over one rank).
DDP_RTOL = 1e-6
# Device runs against the fp32 run on CPU. GPU "fp32" convolutions use TF32 by default
# (cudnn.allow_tf32: 10 mantissa bits), so they drift from the CPU like the bf16 runs (8 bits)
# do, and take the bf16 limits: ~3x the drift of bf16 against fp32 measured on CPU with the
# GPU sizes (one thread, the zoo teacher, 64 toy images each):
# - the toy student's loss at every step (largest relative difference): up to 4.4e-2 over its
#   40 steps x 8 images at 160/224 (it grows with the steps: 2e-3 over the first 10);
TOY_LOSS_RTOL = {FP32: 0.15, "bf16": 0.15}
# - cache-logits, every view's normaliser Σq^1.8 (relative): up to 2.5e-2 (128 views;
#   codec_quality --compare-precision bf16: up to 1.5e-2 over 100 val views);
NORMALIZER_RTOL = {FP32: 0.075, "bf16": 0.075}
# - pseudo-label: the share of images whose number of boxes >= 0.5 differs, 5.5 % (3 of 55
#   images), and the largest score change of the others' boxes, 1.1e-2.
PSEUDO_CHANGED_SHARE = {FP32: 0.15, "bf16": 0.15}
PSEUDO_SCORE_ATOL = {FP32: 0.035, "bf16": 0.035}


@dataclass(frozen=True)
class Sizes:
    """How big each check runs: the GPU's, or the dry run's tiny ones."""

    kernels: tuple              # (rows, classes) checked against float64
    timing: tuple               # (rows, classes) timed
    repeats: int                # timed runs per row (best)
    images: int                 # toy images generated, labeled and unlabeled each
    toy_iters: int
    r50_iters: int
    batch: int                  # images per training step and per teacher batch
    toy_sizes: tuple[int, int]  # short side, long-side cap of the toy student's inputs
    r50_sizes: tuple[int, int]
    r50_divisibility: int       # input.size_divisibility of the R-50 (0: its coarsest stride, 128)
    workers: int                # DataLoader workers of the training runs


GPU_SIZES = Sizes(kernels=((1_000, 80), (110_000, 80), (1_760_000, 80)),
                  timing=((110_000, 80), (1_760_000, 80)), repeats=5, images=64, toy_iters=40,
                  r50_iters=20, batch=8, toy_sizes=(160, 224), r50_sizes=(600, 1000), r50_divisibility=0,
                  workers=4)
DRY_SIZES = Sizes(kernels=((64, 8), (1_000, 10)), timing=((1_000, 10),), repeats=1, images=2,
                  toy_iters=2, r50_iters=1, batch=2, toy_sizes=(64, 96), r50_sizes=(64, 96),
                  r50_divisibility=32, workers=0)


@dataclass(frozen=True)
class Row:
    """One line of the table; ``ok`` None for a figure without a limit."""

    check: str
    what: str
    measured: str
    limit: str = ""
    ok: bool | None = None


@dataclass
class Context:
    device: str             # "cuda" or "cpu"
    sizes: Sizes
    workdir: Path
    compile_backend: str
    data: dict | None = None

    @property
    def fused_backend(self) -> str:
        return "numba-cuda" if self.device == "cuda" else "numba-cpu"


# ------------------------------------------------------------------------------ 1. kernels


def normalizer(loss: str, q, labels) -> float:
    """The focal loss's max(#foreground, 1), or the ADL's max(Σ q^1.8, 1) in float64."""
    from cuda_ops import reference
    from cuda_ops.constants import NORMALIZER_POWER

    if loss == "focal":
        return float(max(int((labels >= 0).sum()), 1))
    return max(float(reference.power_sum(q.double(), NORMALIZER_POWER)), 1.0)


def loss_and_grad(loss: str, x, q, labels, norm: float, backend: str) -> tuple[float, torch.Tensor]:
    """A loss (float) and its gradient w.r.t. the logits ``x`` (M, C), on ``backend``."""
    import cuda_ops

    x = x.detach().clone().requires_grad_(True)
    if loss == "focal":
        out = cuda_ops.sigmoid_focal_loss(x, labels, normalizer=norm, backend=backend)
    else:
        out = cuda_ops.adaptive_distillation_loss(x, q, labels, normalizer=norm, backend=backend)
    out.backward()
    return float(out.detach()), x.grad


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest |value - reference| per element over max(|reference|, 1 % of its largest)."""
    reference = reference.double()
    floor = max(1e-2 * float(reference.abs().max()), 1e-30)
    return float(((value.double() - reference).abs() / reference.abs().clamp(min=floor)).max())


def check_kernels(ctx: Context) -> list[Row]:
    from cuda_ops import power_sum
    from cuda_ops.bench import make_inputs
    from cuda_ops.constants import NORMALIZER_POWER

    rows = []
    for m, c in ctx.sizes.kernels:
        for loss in LOSSES:
            x, q, labels = make_inputs(loss, m, c, torch.device(ctx.device))
            norm = normalizer(loss, q, labels)
            fused, fused_grad = loss_and_grad(loss, x, q, labels, norm, ctx.fused_backend)
            ref, ref_grad = loss_and_grad(loss, x.double(), None if q is None else q.double(), labels,
                                          norm, "torch")
            errors = (abs(fused - ref) / abs(ref), relative_error(fused_grad, ref_grad))
            rows.append(Row("kernels", f"{loss} {m:,} x {c}: {ctx.fused_backend} vs float64",
                            f"loss {errors[0]:.1e}, gradient {errors[1]:.1e}", f"<= {KERNEL_RTOL:.0e}",
                            max(errors) <= KERNEL_RTOL))
            if loss == "adl":
                fused_sum = float(power_sum(q, NORMALIZER_POWER, backend=ctx.fused_backend))
                error = abs(fused_sum / float(power_sum(q.double(), NORMALIZER_POWER, backend="torch")) - 1)
                rows.append(Row("kernels", f"power sum {m:,} x {c}: {ctx.fused_backend} vs float64",
                                f"{error:.1e}", f"<= {KERNEL_RTOL:.0e}", error <= KERNEL_RTOL))
            del x, q, labels, fused_grad, ref_grad
    return rows


# ------------------------------------------------------------------------------ 2. speed


def check_speed(ctx: Context) -> list[Row]:
    from cuda_ops.bench import eager_step, fused_step, make_inputs, run_once, time_step

    device, repeats = torch.device(ctx.device), ctx.sizes.repeats
    rows = []
    for m, c in ctx.sizes.timing:
        for loss in LOSSES:
            x, q, labels = make_inputs(loss, m, c, device)
            args = (x, q, labels, normalizer(loss, q, labels))
            fused, _ = time_step(fused_step(loss, ctx.fused_backend), args, device, repeats)
            eager, _ = time_step(eager_step(loss), args, device, repeats)
            figures = [f"{ctx.fused_backend} {fused * 1e3:.2f} ms",
                       f"eager {eager * 1e3:.2f} ms ({eager / fused:.1f}x the fused time)"]
            try:
                compiled = torch.compile(eager_step(loss), dynamic=False, backend=ctx.compile_backend)
                t0 = time.perf_counter()
                run_once(compiled, *args)
                compile_s = time.perf_counter() - t0
                best, _ = time_step(compiled, args, device, repeats)
                figures.append(f"torch.compile[{ctx.compile_backend}] {best * 1e3:.2f} ms "
                               f"({best / fused:.1f}x; compiling took {compile_s:.0f} s)")
            except Exception as err:  # no C compiler for inductor, ...: a figure missing, not a fault
                figures.append(f"torch.compile failed: {one_line(err)}")
            rows.append(Row("speed", f"{loss} {m:,} x {c}: fwd + bwd, best of {repeats}", "; ".join(figures)))
            del x, q, labels
    return rows


# ------------------------------------------------------------------------------ data


def toy_data(ctx: Context) -> dict:
    """A few toy images (labeled and unlabeled), generated once per run."""
    if ctx.data is None:
        from sadpipe.data.toy import annotation_path, generate_toy_dataset, image_dir

        root = ctx.workdir / "data"
        n = ctx.sizes.images
        generate_toy_dataset(root, seed=0, num_train=n, num_unlabeled=n, num_val=0)
        ctx.data = {"train": annotation_path(root, "train"), "train_images": image_dir(root, "train"),
                    "unlabeled": annotation_path(root, "unlabeled"),
                    "unlabeled_images": image_dir(root, "unlabeled")}
    return ctx.data


# ------------------------------------------------------------------------------ 3. train


@dataclass(frozen=True)
class TrainRun:
    losses: list[float]       # per step
    images_per_s: float       # median over the steps after WARMUP_STEPS (all of them if fewer)


def train_config(ctx: Context, arch: str, amp: str, device: str) -> dict:
    """The toy student's shipped config, or the paper's R-50 defaults (untrained), at the
    check's sizes, logging every step."""
    from sadpipe.config import load_config
    from sadpipe.pipeline.shipped import SHIPPED_DIR

    data, s = toy_data(ctx), ctx.sizes
    toy = arch == "toy_student"
    short, cap = s.toy_sizes if toy else s.r50_sizes
    iters = s.toy_iters if toy else s.r50_iters
    overrides = [f"data.train_annotations={json.dumps(str(data['train']))}",
                 f"data.train_images={json.dumps(str(data['train_images']))}",
                 f"data.num_workers={s.workers if device == 'cuda' else 0}",
                 f"input.min_size={short}", f"input.max_size={cap}", f"input.train_min_sizes=[{short}]",
                 f"solver.images_per_batch={s.batch}", f"solver.max_iter={iters}",
                 f"solver.steps=[{iters + 1}]", f"solver.amp={json.dumps(amp)}",
                 f"train.device={json.dumps(device)}", "train.log_period=1",
                 f"train.checkpoint_period={iters + 1}"]
    if not toy:
        overrides += [f"model.arch={json.dumps(arch)}", "model.pretrained=false", "solver.warmup_iters=0",
                      "solver.clip_grad_norm=10.0", f"input.size_divisibility={s.r50_divisibility}"]
    return load_config(SHIPPED_DIR / "toy_student.toml" if toy else None, tuple(overrides))


def train_run(ctx: Context, arch: str, amp: str, device: str) -> TrainRun:
    from sadpipe.bench.train import quiet
    from sadpipe.engine.run_dir import METRICS_FILE
    from sadpipe.engine.trainer import train

    out = ctx.workdir / f"train_{arch}_{amp}_{device}"
    with quiet():
        train(train_config(ctx, arch, amp, device), out)
    records = [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]
    timed = records[WARMUP_STEPS:] or records
    return TrainRun([r["loss"] for r in records], statistics.median(r["images_per_s"] for r in timed))


def loss_difference(run: TrainRun, reference: TrainRun) -> float:
    """Largest relative difference of the per-step losses of two runs of the same steps."""
    return max(abs(a - b) / abs(b) for a, b in zip(run.losses, reference.losses, strict=True))


def check_train(ctx: Context) -> list[Row]:
    s, rows = ctx.sizes, []
    runs = {p: train_run(ctx, "toy_student", _amp(p), ctx.device) for p in PRECISIONS}
    reference = runs[FP32] if ctx.device == "cpu" else train_run(ctx, "toy_student", AMP_OFF, "cpu")
    for precision, run in runs.items():
        difference = loss_difference(run, reference)
        rows.append(Row("train", f"toy_student {precision}: {steps(s.toy_iters)} x {s.batch} images at "
                                 f"{s.toy_sizes[0]}/{s.toy_sizes[1]}, losses vs fp32 on CPU",
                        f"{run.images_per_s:.1f} images/s; loss {difference:.1e}",
                        f"<= {TOY_LOSS_RTOL[precision]:g}", difference <= TOY_LOSS_RTOL[precision]))
    for precision in PRECISIONS:
        run = train_run(ctx, "resnet50", _amp(precision), ctx.device)
        finite = all(math.isfinite(v) for v in run.losses)
        rows.append(Row("train", f"resnet50 {precision}: {steps(s.r50_iters)} x {s.batch} images at "
                                 f"{s.r50_sizes[0]}/{s.r50_sizes[1]} (untrained)",
                        f"{run.images_per_s:.1f} images/s; last loss {run.losses[-1]:.3f}",
                        "finite", finite))
    return rows


def _amp(precision: str) -> str:
    return AMP_OFF if precision == FP32 else precision


def steps(n: int) -> str:
    return f"{n} step{'s' if n != 1 else ''}"


# ------------------------------------------------------------------------------ 4. teacher


@dataclass(frozen=True)
class TeacherRun:
    items: dict               # cache: {sample key: {view: normaliser}}; pseudo: {image: scores}
    count: int                # views cached / images labeled
    seconds: float


def cache_run(ctx: Context, precision: str, device: str, *, name: str = "") -> TeacherRun:
    """``cache-logits`` of the toy training images with the zoo teacher."""
    import shards
    from sadpipe import zoo
    from sadpipe.engine.cache_logits import cache_logits, student_cache_settings
    from sadpipe.engine.distributed import DistInfo
    from sadpipe.pipeline.shipped import SHIPPED_DIR

    data, s = toy_data(ctx), ctx.sizes
    settings = student_cache_settings(SHIPPED_DIR / "toy_student_sad.toml", min_size=s.toy_sizes[0],
                                      max_size=s.toy_sizes[1], batch_size=s.batch)
    out = ctx.workdir / f"cache_{precision}_{device}{name}"
    t0 = time.perf_counter()
    cache_logits(zoo.teacher_path(), data["train"], data["train_images"], out, settings=settings,
                 dist=DistInfo(), device=device, precision=precision)
    seconds = time.perf_counter() - t0
    pipeline = shards.shard_pipeline(out, shuffle=False, nodesplitter=None, workersplitter=None)
    items = {sample["key"]: {v: view["normalizer"] for v, view in sample["views"].items()}
             for sample in pipeline}
    return TeacherRun(items, sum(len(v) for v in items.values()), seconds)


def pseudo_run(ctx: Context, precision: str, device: str, *, name: str = "") -> TeacherRun:
    """``pseudo-label`` of the toy unlabeled images with the zoo teacher."""
    from sadpipe import zoo
    from sadpipe.engine.pseudo_label import pseudo_label

    data = toy_data(ctx)
    out = ctx.workdir / f"pseudo_{precision}_{device}{name}.json"
    t0 = time.perf_counter()
    pseudo_label(zoo.teacher_path(), data["unlabeled_images"], out, image_info=data["unlabeled"],
                 batch_size=ctx.sizes.batch, device=device, precision=precision, progress=False)
    seconds = time.perf_counter() - t0
    scores = {}
    for ann in json.loads(out.read_text())["annotations"]:
        scores.setdefault(ann["image_id"], []).append(ann["score"])
    items = {image: sorted(values, reverse=True) for image, values in scores.items()}
    return TeacherRun(items, ctx.sizes.images, seconds)


def normalizer_difference(run: TeacherRun, reference: TeacherRun) -> float:
    """Largest relative difference of a cached view's normaliser from the reference cache's."""
    if run.items.keys() != reference.items.keys():
        return math.inf
    return max(abs(views[v] / reference.items[key][v] - 1) for key, views in run.items.items() for v in views)


def pseudo_difference(run: TeacherRun, reference: TeacherRun) -> tuple[float, float]:
    """(share of the images whose number of pseudo-boxes differs, largest score change of the
    others' boxes, in score order)."""
    images = run.items.keys() | reference.items.keys()
    changed, largest = 0, 0.0
    for image in images:
        a, b = run.items.get(image, []), reference.items.get(image, [])
        if len(a) != len(b):
            changed += 1
        elif a:
            largest = max(largest, max(abs(x - y) for x, y in zip(a, b)))
    return changed / max(len(images), 1), largest


def check_teacher(ctx: Context) -> list[Row]:
    rows = []
    cache_run(ctx, FP32, ctx.device, name="warm-up")   # one-time costs: CUDA, JIT compilation
    caches = {p: cache_run(ctx, p, ctx.device) for p in PRECISIONS}
    reference = caches[FP32] if ctx.device == "cpu" else cache_run(ctx, FP32, "cpu")
    for precision, run in caches.items():
        difference = normalizer_difference(run, reference)
        rows.append(Row("teacher", f"cache-logits {precision}: {run.count} views, normalisers vs fp32 on CPU",
                        f"{run.count / run.seconds:.1f} views/s; {difference:.1e}",
                        f"<= {NORMALIZER_RTOL[precision]:g}", difference <= NORMALIZER_RTOL[precision]))
    pseudo_run(ctx, FP32, ctx.device, name="warm-up")
    labels = {p: pseudo_run(ctx, p, ctx.device) for p in PRECISIONS}
    reference = labels[FP32] if ctx.device == "cpu" else pseudo_run(ctx, FP32, "cpu")
    for precision, run in labels.items():
        changed, largest = pseudo_difference(run, reference)
        share, atol = PSEUDO_CHANGED_SHARE[precision], PSEUDO_SCORE_ATOL[precision]
        rows.append(Row("teacher", f"pseudo-label {precision}: {run.count} images, boxes vs fp32 on CPU",
                        f"{run.count / run.seconds:.1f} images/s; {changed:.0%} of images changed, "
                        f"scores {largest:.1e}", f"<= {share:.0%}, <= {atol:g}",
                        changed <= share and largest <= atol))
    return rows


# ------------------------------------------------------------------------------ 5. ddp


def check_ddp(ctx: Context) -> list[Row]:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from sadpipe.data.coco import read_coco_json
    from sadpipe.engine.distributed import DistInfo
    from sadpipe.engine.settings import DistillSettings, LossSettings
    from sadpipe.engine.streams import coco_stream
    from sadpipe.engine.trainer import model_spec_from_config, step_losses

    backend = "nccl" if ctx.device == "cuda" else "gloo"
    cfg = train_config(ctx, "toy_student", AMP_OFF, ctx.device)
    spec = model_spec_from_config(cfg, read_coco_json(cfg["data"]["train_annotations"])["categories"])
    batch = next(coco_stream(cfg["data"]["train_annotations"], cfg["data"]["train_images"], spec, cfg,
                             DistInfo(), start_batch=0, pin_memory=ctx.device == "cuda"))
    torch.manual_seed(0)
    plain = spec.build(pretrained=True).to(ctx.device)
    plain.channels_last = False   # DDP's gradient buckets are NCHW (channels-last is a CPU layout)
    model = copy.deepcopy(plain)

    def gradient(net, module) -> torch.Tensor:
        module.zero_grad(set_to_none=True)
        losses, _ = step_losses(net, spec, batch, ctx.device, loss=LossSettings.from_config(cfg),
                                distill=DistillSettings.from_config(cfg))
        sum(losses.values()).backward()
        return torch.cat([p.grad.reshape(-1) for p in module.parameters() if p.grad is not None])

    store_path = ctx.workdir / "ddp_store"
    store_path.unlink(missing_ok=True)
    dist.init_process_group(backend, store=dist.FileStore(str(store_path), 1), rank=0, world_size=1)
    try:
        wrapped = DistributedDataParallel(model, device_ids=[0] if ctx.device == "cuda" else None)
        difference = relative_error(gradient(wrapped, model), gradient(plain, plain))
        total = torch.full((1,), 3.0, device=ctx.device)
        dist.all_reduce(total)
        reduced = float(total) == 3.0
    finally:
        dist.destroy_process_group()
    return [Row("ddp", f"one DistributedDataParallel step, 1 process ({backend}): gradient vs the "
                       "plain model", f"{difference:.1e}; all_reduce {'ok' if reduced else 'WRONG'}",
                f"<= {DDP_RTOL:.0e}", difference <= DDP_RTOL and reduced)]


# ------------------------------------------------------------------------------ the command

CHECKS = {"kernels": check_kernels, "speed": check_speed, "train": check_train,
          "teacher": check_teacher, "ddp": check_ddp}


def one_line(err: BaseException) -> str:
    """An exception as one short line (a UserError's message, else type and first line)."""
    text = getattr(err, "message", None) or f"{type(err).__name__}: {str(err).strip()}"
    line = text.splitlines()[0] if text.strip() else type(err).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def run_check(name: str, ctx: Context) -> list[Row]:
    """The rows of one check; an exception is one failing row (the other checks still run)."""
    try:
        return CHECKS[name](ctx)
    except Exception as err:
        return [Row(name, "did not complete", one_line(err), "", False)]


def table(rows: list[Row]) -> list[str]:
    """The markdown table of the rows."""
    result = {True: "ok", False: "**MISMATCH**", None: "—"}
    lines = ["| check | what | measured | limit | result |", "|---|---|---|---|---|"]
    return lines + [f"| {r.check} | {r.what} | {r.measured} | {r.limit} | {result[r.ok]} |" for r in rows]


def machine_line(device: str) -> str:
    import numba

    where = (torch.cuda.get_device_name(0) if device == "cuda"
             else platform.processor() or platform.machine())
    cuda = f", CUDA {torch.version.cuda}" if device == "cuda" else ""
    return (f"gpu_check on {device} ({where}): torch {torch.__version__}{cuda}, numba {numba.__version__}, "
            f"{torch.get_num_threads()} CPU threads")


@click.command(name="gpu_check")
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default="cuda", show_default=True,
              help="cuda: the real check (cuda:0). cpu: a dry run of the same steps at tiny sizes.")
@click.option("--only", "only", multiple=True, type=click.Choice(list(CHECKS)),
              help="Run only this check (repeatable); default: all five.")
@click.option("--compile-backend", default="inductor", show_default=True,
              help="torch.compile backend of the speed check (the CPU tests use 'eager': no code "
                   "generation, to stay fast).")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the generated data and the runs (kept); default: a temporary one.")
def command(device, only, compile_backend, workdir):
    """Check sadpipe's GPU path on this machine and print one table (exit 1 on a mismatch,
    2 without CUDA)."""
    if device == "cuda" and not torch.cuda.is_available():
        click.echo("gpu_check: no CUDA device here (torch.cuda.is_available() is False); "
                   "--device cpu runs the same steps on CPU at tiny sizes")
        sys.exit(EXIT_NO_CUDA)
    sizes = GPU_SIZES if device == "cuda" else DRY_SIZES
    owned = workdir is None
    root = Path(tempfile.mkdtemp(prefix="gpu_check_")) if owned else workdir
    root.mkdir(parents=True, exist_ok=True)
    ctx = Context(device, sizes, root, compile_backend)
    click.echo(machine_line(device))
    t0 = time.perf_counter()
    try:
        rows = [row for name in (only or CHECKS) for row in run_check(name, ctx)]
    finally:
        if owned:
            shutil.rmtree(root, ignore_errors=True)
    click.echo("\n".join(table(rows)))
    failed = sum(row.ok is False for row in rows)
    click.echo(f"gpu_check: {failed} mismatch{'es' if failed != 1 else ''} in {len(rows)} rows, "
               f"{time.perf_counter() - t0:.0f} s")
    sys.exit(EXIT_MISMATCH if failed else 0)


if __name__ == "__main__":
    command()
