"""Supervised RetinaNet training (teachers and baselines), read top to bottom.

Resumable: checkpoints hold model, optimizer and iteration; the batch schedule is a pure
function of (seed, iteration), so a killed run resumed from its last checkpoint ends with
the same weights as an uninterrupted one (on CPU).
"""
from __future__ import annotations

import functools
import logging
import time

import torch
from torch.nn.parallel import DistributedDataParallel

from sadpipe.checkpoint import ModelSpec, load_checkpoint, save_checkpoint
from sadpipe.data.coco import CocoDataset
from sadpipe.data.loader import BatchSchedule, TrainDataset, collate
from sadpipe.data.transforms import Preprocessing
from sadpipe.engine.distributed import DistInfo, init_distributed, resolve_device
from sadpipe.engine.progress import Progress
from sadpipe.engine.run_dir import RunDir
from sadpipe.engine.schedule import learning_rate
from sadpipe.errors import UserError
from sadpipe.modeling.anchors import AnchorLayout
from sadpipe.modeling.backbones import ARCHS
from sadpipe.modeling.losses import detection_losses
from sadpipe.modeling.targets import build_targets

log = logging.getLogger(__name__)


def model_spec_from_config(cfg: dict, categories: list[dict]) -> ModelSpec:
    m, i = cfg["model"], cfg["input"]
    if m["arch"] not in ARCHS:
        raise UserError(f"config: model.arch '{m['arch']}' is unknown (known: {', '.join(ARCHS)})")
    layout = AnchorLayout(strides=tuple(m["strides"]), size_factor=m["anchor_size_factor"],
                          scales_per_octave=m["scales_per_octave"],
                          aspect_ratios=tuple(m["aspect_ratios"]))
    prep = Preprocessing(min_size=i["min_size"], max_size=i["max_size"], mean=tuple(i["mean"]),
                         std=tuple(i["std"]), size_divisibility=layout.size_divisibility)
    return ModelSpec(arch=m["arch"], categories=tuple((c["id"], c["name"]) for c in categories),
                     anchor_layout=layout, preprocessing=prep)


def train(cfg: dict, out_dir, *, resume: bool = False) -> RunDir:
    # ---- set-up: device, processes, run folder, data, model, optimizer
    device = resolve_device(cfg["train"]["device"])
    dist_info = init_distributed(device)
    torch.manual_seed(cfg["train"]["seed"])
    data_cfg, solver = cfg["data"], cfg["solver"]
    if not data_cfg["train_annotations"]:
        raise UserError("config: data.train_annotations is empty; set it in the config or with "
                        "--set data.train_annotations=PATH")
    coco = CocoDataset(data_cfg["train_annotations"], data_cfg["train_images"])
    spec = model_spec_from_config(cfg, coco.categories)
    dataset = TrainDataset(coco, spec.category_ids, spec.preprocessing,
                           train_min_sizes=cfg["input"]["train_min_sizes"], flip=cfg["input"]["flip"],
                           strict=data_cfg["strict_images"])
    if len(dataset) == 0:
        raise UserError(f"{data_cfg['train_annotations']}: no image with boxes to train on")
    if solver["images_per_batch"] % dist_info.world_size:
        raise UserError(f"solver.images_per_batch {solver['images_per_batch']} is not divisible "
                        f"by the number of processes {dist_info.world_size}")

    run = RunDir(out_dir)
    if dist_info.is_main:
        run.prepare(cfg, resume=resume)

    model = spec.build(pretrained=cfg["model"]["pretrained"]).to(device)
    if cfg["model"]["init"]:
        _load_init(model, spec, cfg["model"]["init"])
    optimizer = torch.optim.SGD(model.parameters(), lr=solver["base_lr"], momentum=solver["momentum"],
                                weight_decay=solver["weight_decay"])
    start_iter = _resume(run, model, optimizer) if resume else 0
    if dist_info.enabled:
        model = DistributedDataParallel(model)

    schedule = BatchSchedule(len(dataset), solver["images_per_batch"], seed=cfg["train"]["seed"],
                             start_iter=start_iter, rank=dist_info.rank, world_size=dist_info.world_size)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=schedule, num_workers=data_cfg["num_workers"],
        collate_fn=functools.partial(collate, size_divisibility=spec.anchor_layout.size_divisibility))

    # ---- the loop
    max_iter = solver["max_iter"]
    progress = Progress(total=max_iter, start=start_iter, enabled=dist_info.is_main)
    t_last, images_seen, skipped = time.perf_counter(), 0, 0
    for iteration, batch in zip(range(start_iter, max_iter), loader):
        lr = learning_rate(iteration, base_lr=solver["base_lr"], warmup_iters=solver["warmup_iters"],
                           warmup_factor=solver["warmup_factor"], steps=solver["steps"],
                           gamma=solver["gamma"])
        for group in optimizer.param_groups:
            group["lr"] = lr

        losses = supervised_losses(model, spec, batch, cfg["loss"], device)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if solver["clip_grad_norm"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), solver["clip_grad_norm"])
        optimizer.step()

        images_seen += len(batch["image_ids"])
        skipped += batch["skipped"]
        done = iteration + 1
        if dist_info.is_main and (done % cfg["train"]["log_period"] == 0 or done == max_iter):
            now = time.perf_counter()
            record = {"iteration": done, "lr": lr, "loss": float(loss.detach()),
                      **{k: float(v.detach()) for k, v in losses.items()},
                      "images_per_s": images_seen * dist_info.world_size / (now - t_last),
                      "skipped_images": skipped}
            run.log_metrics(record)
            progress.log(done, record)
            t_last, images_seen = now, 0
        progress.update(done, float(loss.detach()))
        if dist_info.is_main and done % cfg["train"]["checkpoint_period"] == 0 and done < max_iter:
            _save_training_checkpoint(run, spec, model, optimizer, done, cfg)
    progress.close()

    if dist_info.is_main:
        save_checkpoint(run.final_model, spec, _unwrap(model), config=cfg)
        log.info("wrote %s", run.final_model)
    return run


def supervised_losses(model, spec: ModelSpec, batch: dict, loss_cfg: dict, device) -> dict:
    """Focal + box loss of one batch."""
    images = batch["images"].to(device, non_blocking=True)
    cls_logits, box_deltas = model(images)
    anchors = spec.anchor_layout.anchors(tuple(images.shape[-2:]))
    labels, box_targets = build_targets(anchors, batch["targets"])
    return detection_losses(cls_logits, box_deltas, labels.to(device), box_targets.to(device),
                            alpha=loss_cfg["focal_alpha"], gamma=loss_cfg["focal_gamma"],
                            beta=loss_cfg["smooth_l1_beta"])


def _unwrap(model):
    return model.module if isinstance(model, DistributedDataParallel) else model


def _save_training_checkpoint(run: RunDir, spec, model, optimizer, iteration: int, cfg: dict):
    save_checkpoint(run.checkpoint_path(iteration), spec, _unwrap(model), config=cfg,
                    training={"iteration": iteration, "optimizer": optimizer.state_dict()})
    run.prune_checkpoints(cfg["train"]["keep_checkpoints"])


def _resume(run: RunDir, model, optimizer) -> int:
    """Load the newest checkpoint; returns the iteration to continue from (0 if none)."""
    checkpoints = run.checkpoints()
    if not checkpoints:
        return 0
    payload = load_checkpoint(checkpoints[-1])
    model.load_state_dict(payload["state_dict"])
    optimizer.load_state_dict(payload["training"]["optimizer"])
    iteration = int(payload["training"]["iteration"])
    run.truncate_metrics(iteration)
    log.info("resumed from %s at iteration %d", checkpoints[-1], iteration)
    return iteration


def _load_init(model, spec: ModelSpec, path) -> None:
    payload = load_checkpoint(path)
    init = ModelSpec.from_dict(payload["model"])
    if init.arch != spec.arch or init.num_classes != spec.num_classes:
        raise UserError(f"{path}: model.init is a {init.arch} with {init.num_classes} classes, "
                        f"the config trains a {spec.arch} with {spec.num_classes}")
    model.load_state_dict(payload["state_dict"])
