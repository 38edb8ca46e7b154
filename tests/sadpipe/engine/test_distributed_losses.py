"""The DDP maths of `step_losses`, on any CPU: two gloo processes, each with half of a batch,
give (after DDP's gradient average) the gradient one process computes on the whole batch.

Both sides run in float32 with whatever kernels the CPU has, so they agree only up to float32
summation order. The test therefore compares the whole gradient normwise, with a tolerance
derived from float32 accumulation, and shows that the comparison still separates right from
wrong maths: the same two processes with per-process normalisers (focal's foreground count
and the ADL's Σq^θ taken on each half, which is what a missing all-reduce would do) miss it by
orders of magnitude more."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sadpipe.config import load_config
from sadpipe.engine import trainer
from sadpipe.engine.distributed import DistInfo
from sadpipe.engine.settings import DistillSettings, LossSettings
from sadpipe.engine.trainer import model_spec_from_config, step_losses
from tests.sadpipe.conftest import CATEGORIES

WORLD = 2
PER_RANK = 2
SIZE = (64, 96)               # (H, W) of every image: one padded batch, split in two
# float32 accumulation: unit roundoff 6e-8 times a summation depth of ~1e3 (a conv weight's
# gradient sums N·H·W products) is ~1e-4 in the worst element; normwise it is far smaller
# (measured ~1e-7 here with AVX-512, AVX2 and unvectorised kernels).
FLOAT32_TOLERANCE = 1e-4
# A per-process normaliser rescales each half's loss by (its count / the global count) · 2:
# the batch below has 4 boxes on rank 0 and 2 on rank 1, a factor ~4/3 and ~2/3 per half.
WRONG_AT_LEAST = 1e-2


def _cfg():
    return load_config(None, ("model.arch=toy_student", "model.anchor_size_factor=1.0",
                              "model.norm=gn", "train.device=cpu"))


def _batch():
    """4 images of one size; uneven boxes per half (4 vs 2) and teacher scores with a
    normaliser per view, as the shard stream gives them."""
    g = torch.Generator().manual_seed(0)
    cfg = _cfg()
    spec = model_spec_from_config(cfg, CATEGORIES)
    num_anchors = spec.anchor_layout.anchors(SIZE).shape[0]
    boxes = [[[8, 8, 40, 40], [50, 10, 90, 50], [20, 30, 60, 62]], [[30, 4, 70, 44]],
             [[2, 2, 30, 30]], [[40, 20, 80, 60]]]
    sharpness = torch.tensor([3.0, 3.0, 8.0, 8.0])[:, None, None]  # rank 1: less teacher mass
    probs = torch.rand(WORLD * PER_RANK, num_anchors, len(CATEGORIES), generator=g) ** sharpness
    mask = torch.rand(WORLD * PER_RANK, num_anchors, generator=g) > 0.05
    theta = cfg["distill"]["normalizer_power"]
    return {
        "images": torch.randn(WORLD * PER_RANK, 3, *SIZE, generator=g),
        "targets": [{"boxes": torch.tensor(b, dtype=torch.float32),
                     "labels": torch.arange(len(b)) % len(CATEGORIES)} for b in boxes],
        "teacher_probs": probs, "teacher_mask": mask,
        "view_normalizers": [float((p[m].double() ** theta).sum()) for p, m in zip(probs, mask)],
    }


def _part(batch, ranks):
    keep = slice(ranks.start * PER_RANK, ranks.stop * PER_RANK)
    return {"images": batch["images"][keep], "targets": batch["targets"][keep],
            "teacher_probs": batch["teacher_probs"][keep], "teacher_mask": batch["teacher_mask"][keep],
            "normalizer": sum(batch["view_normalizers"][keep])}


def _gradient(batch, info=DistInfo()):
    """The flattened gradient of the step's total loss (DDP-averaged under ``info``)."""
    torch.manual_seed(0)
    cfg = _cfg()
    spec = model_spec_from_config(cfg, CATEGORIES)
    model = spec.build()
    losses, _ = step_losses(model, spec, batch, "cpu", loss=LossSettings.from_config(cfg),
                            distill=DistillSettings.from_config(cfg), dist=info)
    sum(losses.values()).backward()
    grads = [p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]
    flat = torch.cat(grads)
    if info.enabled:  # what DistributedDataParallel does to the gradients
        dist.all_reduce(flat)
        flat /= info.world_size
    return flat


def _rank(rank, init_file, out, per_process_normalizers):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    if per_process_normalizers:  # the deliberate bug: no sum over processes
        trainer._global_sums = lambda values, device: values
    grad = _gradient(_part(_batch(), range(rank, rank + 1)), DistInfo(rank, WORLD, rank))
    if rank == 0:
        torch.save(grad, out)
    dist.destroy_process_group()


def _two_processes(tmp_path, *, per_process_normalizers):
    out = tmp_path / f"grad_{per_process_normalizers}.pt"
    init_file = tmp_path / f"init_{per_process_normalizers}"
    mp.start_processes(_rank, args=(str(init_file), str(out), per_process_normalizers),
                       nprocs=WORLD, start_method="spawn")
    return torch.load(out, weights_only=True)


@pytest.fixture(scope="module")
def one_process():
    return _gradient(_part(_batch(), range(0, WORLD)))


def _relative_difference(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.numerics
def test_two_processes_give_the_one_process_gradient(one_process, tmp_path):
    difference = _relative_difference(_two_processes(tmp_path, per_process_normalizers=False),
                                      one_process)
    print(f"two processes vs one: relative gradient difference {difference:.2e}")
    assert difference <= FLOAT32_TOLERANCE


@pytest.mark.numerics
def test_per_process_normalisers_are_caught(one_process, tmp_path):
    difference = _relative_difference(_two_processes(tmp_path, per_process_normalizers=True),
                                      one_process)
    print(f"per-process normalisers vs one process: relative gradient difference {difference:.2e}")
    assert difference >= WRONG_AT_LEAST


def test_the_batch_halves_differ_in_both_normalisers():
    """The wrong variant can only show if the halves' counts differ: check they do."""
    batch = _batch()
    halves = [_part(batch, range(r, r + 1)) for r in range(WORLD)]
    assert halves[0]["normalizer"] > 1.5 * halves[1]["normalizer"]
    assert [sum(len(t["boxes"]) for t in h["targets"]) for h in halves] == [4, 2]
