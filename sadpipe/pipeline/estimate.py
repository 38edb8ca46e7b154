"""How long a pipeline will take here, before it runs (``sadpipe demo`` prints it).

Each stage's work is counted from its options (images to generate, images to train on,
images or views for the teacher: :mod:`sadpipe.pipeline.work`) and priced at the seconds per
unit measured for that kind of stage on the reference machine (the README's: a shared
2-core VM). A few seconds of training steps of a fixed small model, timed here and on the
reference machine, scale the prices to this machine. Stages already done (and given ones) cost nothing.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from sadpipe.pipeline.state import DONE, RunState
from sadpipe.pipeline.work import eval_work, image_counts, stage_work

# Seconds per unit of work on the reference machine (2 threads), measured with `sadpipe demo
# --seed 0` (README, "Measured results": (wall time - STAGE_START_S) / work); the key is
# (command, arch or None). The demo's stages were re-measured with cache format 2 on a machine
# whose calibration took 0.2816 s, and scaled by 0.23 / 0.2816 to the reference machine; the
# toy teacher's price is from the reference machine itself.
REFERENCE_SECONDS = {
    ("toy-data", None): 0.0040,            # per image generated
    ("train", "toy_student"): 0.0126,      # per image trained on (labeled batches)
    ("train", "toy_student+distill"): 0.0129,  # per image trained on, from teacher shards
    ("train", "toy_teacher"): 0.0267,      # per image, toy_teacher.toml (multi-scale)
    ("pseudo-label", None): 0.0093,        # per unlabeled image
    ("cache-logits", None): 0.0078,        # per view (teacher forward + one-pass encode)
    ("eval", None): 0.0121,                # per val image
}
STAGE_START_S = 4.0           # a stage process importing torch and reading its inputs
REFERENCE_CALIBRATION_S = 0.23  # `calibration_seconds()` on the reference machine (median of 3)
CALIBRATION_STEPS = 3


@dataclass(frozen=True)
class StageEstimate:
    name: str
    seconds: float


def calibration_seconds() -> float:
    """Seconds of CALIBRATION_STEPS training steps of a toy_student on a fixed random batch
    (one untimed step first)."""
    from sadpipe.modeling.anchors import AnchorLayout
    from sadpipe.modeling.retinanet import RetinaNet

    generator = torch.Generator().manual_seed(0)
    model = RetinaNet("toy_student", 10, AnchorLayout(size_factor=2.0))
    images = torch.randn(8, 3, 160, 224, generator=generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step():
        cls_logits, box_deltas = model(images)
        loss = cls_logits.sigmoid().mean() + box_deltas.abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()
    t0 = time.perf_counter()
    for _ in range(CALIBRATION_STEPS):
        step()
    return time.perf_counter() - t0


def estimate_seconds(pipeline, *, speed: float | None = None) -> list[StageEstimate]:
    """Per-stage estimates for the stages of ``pipeline`` still to run. ``speed``: this
    machine's seconds per reference second (measured when None)."""
    if speed is None:
        speed = calibration_seconds() / REFERENCE_CALIBRATION_S
    counts = image_counts(pipeline)
    out = []
    for stage in pipeline.stages:
        if stage.given or stage.command is None or _done(pipeline, stage):
            continue
        kind, units = stage_work(stage, counts, pipeline)
        key = kind if kind in REFERENCE_SECONDS else ("train", "toy_teacher")  # a larger model
        seconds = STAGE_START_S + units * REFERENCE_SECONDS[key]
        seconds += eval_work(stage, counts) * REFERENCE_SECONDS[("eval", None)]  # train.eval_period
        out.append(StageEstimate(stage.name, speed * seconds))
    return out


def format_estimate(estimates: list[StageEstimate]) -> str:
    total = sum(e.seconds for e in estimates)
    if not estimates:
        return "estimate: every stage is done already"
    longest = max(estimates, key=lambda e: e.seconds)
    return (f"estimate: about {total / 60:.0f} min for {len(estimates)} stages on this machine "
            f"(longest: {longest.name}, {longest.seconds / 60:.1f} min)")


def _done(pipeline, stage) -> bool:
    """Finished in an earlier run with every output in place (the runner may still rerun it
    when its inputs changed)."""
    record = RunState(pipeline.workdir).record(stage.name)
    return bool(record and record["status"] == DONE and stage.outputs_complete())
