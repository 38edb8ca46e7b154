"""RetinaNet training, read top to bottom: supervised (teachers, baselines) or with
Semi-supervised Adaptive Distillation from cached teacher shards or a live teacher.

Resumable: checkpoints hold model, optimizer and iteration; every batch stream is a pure
function of (seed, batches drawn), so a killed run resumed from its last checkpoint ends
with the same weights as an uninterrupted one (on CPU).
"""
from __future__ import annotations

import logging
import time

import torch
from torch.nn.parallel import DistributedDataParallel

from cuda_ops.constants import AMP_MODES, AMP_OFF, NORMALIZER_POWER, PRECISIONS
from sadpipe.checkpoint import load_checkpoint, save_checkpoint
from sadpipe.data.categories import class_order
from sadpipe.data.coco import read_coco_json
from sadpipe.data.toy import PARAMS_KEY as TOY_PARAMS_KEY
from sadpipe.data.transforms import preprocessing_from_config
from sadpipe.engine.distributed import DistInfo, init_distributed, resolve_device
from sadpipe.engine.periodic_eval import BEST_KEY, PeriodicEval, best_so_far, is_better
from sadpipe.engine.precision import amp_precision, autocast, check_choice, grad_scaler
from sadpipe.engine.progress import Progress
from sadpipe.engine.run_dir import RunDir
from sadpipe.engine.settings import DistillSettings, LossSettings, SolverSettings, TrainSettings
from sadpipe.engine.streams import LABELED, PSEUDO, ShardSource, batches_drawn, open_stream, training_sources
from sadpipe.engine.teacher import Teacher, check_teacher_compatible
from sadpipe.errors import UserError
from sadpipe.fileio import file_sha256
from sadpipe.modeling.anchors import ANCHOR_CONVENTIONS, AnchorLayout
from sadpipe.modeling.backbones import ARCHS, NORMS, P6_INPUTS
from sadpipe.modeling.boxes import BOX_CONVENTIONS
from sadpipe.modeling.distill import adaptive_distillation_loss, mean_adaptive_weight
from sadpipe.modeling.losses import detection_losses
from sadpipe.modeling.retinanet import CLS_LOGITS
from sadpipe.modeling.spec import ModelSpec
from sadpipe.modeling.targets import IGNORE, build_targets

log = logging.getLogger(__name__)

# fp16 training: a non-finite gradient at this loss scale or below overflows without any
# scaling, so skipping the step and lowering the scale further cannot help.
MIN_LOSS_SCALE = 1.0

def model_spec_from_config(cfg: dict, categories: list[dict]) -> ModelSpec:
    """The spec of the model ``cfg`` trains; ``categories`` (``[{"id", "name"}]``) in any order."""
    model_cfg = cfg["model"]
    for key, known in (("arch", ARCHS), ("norm", NORMS), ("p6_from", P6_INPUTS),
                       ("anchor_convention", ANCHOR_CONVENTIONS), ("box_convention", BOX_CONVENTIONS)):
        if model_cfg[key] not in known:
            raise UserError(f"config: model.{key} '{model_cfg[key]}' is unknown (known: {', '.join(known)})")
    detectron_variant = model_cfg["stride_in_1x1"] or model_cfg["p6_from"] != "p5"
    if ARCHS[model_cfg["arch"]].family != "resnet" and detectron_variant:
        raise UserError(f"config: model.stride_in_1x1 and model.p6_from = \"c5\" exist for the "
                        f"resnet bodies only, not for model.arch '{model_cfg['arch']}'")
    if model_cfg["stride_in_1x1"] and ARCHS[model_cfg["arch"]].block != "bottleneck":
        raise UserError(f"config: model.stride_in_1x1 exists for bottleneck bodies (ResNet-50 and "
                        f"up), not for model.arch '{model_cfg['arch']}'")
    layout = AnchorLayout(strides=tuple(model_cfg["strides"]), size_factor=model_cfg["anchor_size_factor"],
                          scales_per_octave=model_cfg["scales_per_octave"],
                          aspect_ratios=tuple(model_cfg["aspect_ratios"]),
                          convention=model_cfg["anchor_convention"])
    return ModelSpec(arch=model_cfg["arch"], categories=class_order(categories),
                     anchor_layout=layout, preprocessing=preprocessing_from_config(cfg),
                     norm=model_cfg["norm"], stride_in_1x1=model_cfg["stride_in_1x1"],
                     p6_from=model_cfg["p6_from"], box_convention=model_cfg["box_convention"])


def train(cfg: dict, out_dir, *, resume: bool = False, teacher_shards=None, pseudo_shards=None,
          teacher_path=None, command: str = "") -> RunDir:
    # ---- set-up: device, processes, settings, model spec, batch sources, run folder, model
    run_settings, solver = TrainSettings.from_config(cfg), SolverSettings.from_config(cfg)
    loss_settings, distill = LossSettings.from_config(cfg), DistillSettings.from_config(cfg)
    device = resolve_device(run_settings.device)
    dist = init_distributed(device)
    torch.manual_seed(run_settings.seed)
    if solver.images_per_batch % dist.world_size:
        raise UserError(f"solver.images_per_batch {solver.images_per_batch} is not divisible "
                        f"by the number of processes {dist.world_size}")
    shard_dirs = {LABELED: teacher_shards, PSEUDO: pseudo_shards}
    spec = model_spec_from_config(cfg, _categories(cfg, shard_dirs))
    sources = training_sources(cfg["data"], shard_dirs,
                               distill=any(shard_dirs.values()) or bool(teacher_path))
    pattern = [name for name in distill.pattern if name in sources] or [LABELED]
    check_choice(solver.amp, AMP_MODES, "config: solver.amp")
    check_choice(distill.teacher_precision, PRECISIONS, "config: distill.teacher_precision")
    teacher = None
    if teacher_path:
        teacher = Teacher(teacher_path, device=device, precision=distill.teacher_precision)
        check_teacher_compatible(teacher.spec, spec, source=teacher_path)
    for source in sources.values():
        if isinstance(source, ShardSource):  # refuse mismatching shards before writing anything
            from sadpipe.engine.shard_stream import check_shard_set
            manifest = check_shard_set(source.shard_dir, spec, cfg, dist)
            if teacher_path:  # rescoring the cached batches: only with the teacher that made them
                _check_cached_teacher(source.shard_dir, manifest, teacher_path)
    evaluator = None
    if run_settings.eval_period > 0:   # the val set is checked before anything is written
        evaluator = PeriodicEval(cfg["data"]["val_annotations"], cfg["data"]["val_images"], spec,
                                 device=device, batch_size=solver.images_per_batch // dist.world_size)

    run = RunDir(out_dir)
    if dist.is_main:
        run.prepare(cfg, resume=resume)
    # model.init replaces every pretrained weight: no ImageNet download for it
    model = spec.build(pretrained=cfg["model"]["pretrained"] and not cfg["model"]["init"]).to(device)
    if cfg["model"]["body_weights"]:
        _load_body_weights(model, spec, cfg["model"]["body_weights"])
    if cfg["model"]["init"]:
        _load_init(model, spec, cfg["model"]["init"], reset_classes=cfg["model"]["init_reset_classes"])
    optimizer = build_optimizer(model, solver)
    scaler = grad_scaler(device, solver.amp)
    start_iter, wall_time = _resume(run, model, optimizer, scaler) if resume else (0, 0.0)
    best = best_so_far(run.read_metrics()) if dist.is_main else None   # val AP of model_best.pt
    if dist.enabled:
        model = DistributedDataParallel(model)
    batch_iters = {name: open_stream(name, sources[name], spec, cfg, dist,
                                      start_batch=batches_drawn(pattern, name, start_iter),
                                      pin_memory=torch.device(device).type == "cuda")
                   for name in set(pattern)}

    # ---- the loop
    max_iter = solver.max_iter
    progress = Progress("train", total=max_iter, done=start_iter, enabled=dist.is_main)
    meter = _Meter()
    t_loop = time.perf_counter() - wall_time  # wall time counts across resumes
    for iteration in range(start_iter, max_iter):
        t0 = time.perf_counter()
        batch = next(batch_iters[pattern[iteration % len(pattern)]])
        t_data = time.perf_counter() - t0
        lr = solver.learning_rate(iteration)
        for group in optimizer.param_groups:
            group["lr"] = lr

        done = iteration + 1
        log_now = dist.is_main and (done % run_settings.log_period == 0 or done == max_iter)
        losses, stats = step_losses(model, spec, batch, device, loss=loss_settings, distill=distill,
                                    teacher=teacher, with_stats=log_now, dist=dist, amp=solver.amp)
        loss = sum(losses.values())
        check_finite(losses, done, run, dist)
        optimizer.zero_grad(set_to_none=True)
        update(loss, model, optimizer, solver, scaler, iteration=done, run=run, dist=dist)

        meter.add(len(batch["image_ids"]) * dist.world_size, batch["skipped"], t_data,
                  time.perf_counter() - t0)
        if log_now:
            record = {"iteration": done, "lr": lr, "source": pattern[iteration % len(pattern)],
                      "loss": float(loss.detach()), **{k: float(v.detach()) for k, v in losses.items()},
                      **stats, **meter.flush(), **({"loss_scale": scaler.get_scale()} if scaler else {})}
            run.log_metrics(record)
            progress.log(record)
        progress.advance(1, loss=f"{float(loss.detach()):.4f}")
        if evaluator and dist.is_main and (done % run_settings.eval_period == 0 or done == max_iter):
            best = evaluate_and_keep_best(evaluator, run, spec, _unwrap(model), cfg, iteration=done,
                                          best=best, progress=progress)
        if dist.is_main and done % run_settings.checkpoint_period == 0 and done < max_iter:
            _save_training_checkpoint(run, spec, model, optimizer, done, cfg,
                                      wall_time=time.perf_counter() - t_loop, scaler=scaler)
            run.write_curves()
    progress.close()

    if dist.is_main:
        provenance = run_provenance(cfg, sources, command=command, iterations=max_iter,
                                    wall_time=time.perf_counter() - t_loop, dist=dist,
                                    teacher_path=teacher_path)
        save_checkpoint(run.final_model, spec, _unwrap(model), config=cfg, provenance=provenance)
        log.info("wrote %s", run.final_model)
        if evaluator is None:   # else drawn by the evaluation after the last iteration
            run.write_curves()
    return run


def evaluate_and_keep_best(evaluator: PeriodicEval, run: RunDir, spec: ModelSpec, model, cfg: dict, *,
                           iteration: int, best: float | None, progress: Progress) -> float | None:
    """``train.eval_period``: the val AP of ``model`` into metrics.jsonl (and the progress
    log), ``model_best.pt`` rewritten when it beats ``best``, curves.png redrawn; returns the
    best val AP so far. Runs on the main process while the others wait at their next step."""
    t0 = time.perf_counter()
    record = {"iteration": iteration, **evaluator.evaluate(model),
              "val_seconds": round(time.perf_counter() - t0, 3)}
    run.log_metrics(record)
    progress.log(record)
    if is_better(record[BEST_KEY], best):
        best = record[BEST_KEY]
        save_checkpoint(run.best_model, spec, model, config=cfg,
                        best={"iteration": iteration, **record})
        log.info("wrote %s (val AP %.4f at iteration %d)", run.best_model, best, iteration)
    run.write_curves()
    return best


def build_optimizer(model, solver: SolverSettings) -> torch.optim.Optimizer:
    """SGD with momentum (the release), or AdamW for short from-scratch runs."""
    params = [p for p in model.parameters() if p.requires_grad]
    if solver.optimizer == "sgd":
        return torch.optim.SGD(params, lr=solver.base_lr, momentum=solver.momentum,
                               weight_decay=solver.weight_decay)
    if solver.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=solver.base_lr, betas=(solver.momentum, 0.999),
                                 weight_decay=solver.weight_decay)
    raise UserError(f"config: solver.optimizer '{solver.optimizer}' is unknown (sgd or adamw)")


def update(loss: torch.Tensor, model, optimizer, solver: SolverSettings, scaler=None, *,
           iteration: int, run: RunDir, dist: DistInfo = DistInfo()) -> None:
    """Backward pass and optimizer step, the gradient norm clipped to ``solver.clip_grad_norm``
    when that is > 0 (a non-finite norm then stops training, :func:`check_finite`).

    With fp16 (``scaler``: :func:`sadpipe.engine.precision.grad_scaler`) the loss is scaled
    before the backward pass and the gradient unscaled before clipping; a step whose gradient
    is not finite is skipped and the scale lowered, the scaler's normal work, unless the scale
    is already down to ``MIN_LOSS_SCALE``: then the gradient overflows unscaled, and training
    stops as for a non-finite loss, before the update."""
    if scaler is None:
        loss.backward()
        if solver.clip_grad_norm > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), solver.clip_grad_norm)
            check_finite({"grad_norm": grad_norm}, iteration, run, dist)
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    if solver.clip_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), solver.clip_grad_norm)
    if scaler.get_scale() <= MIN_LOSS_SCALE:
        norms = [torch.linalg.vector_norm(p.grad) for p in model.parameters() if p.grad is not None]
        check_finite({"grad_norm": torch.linalg.vector_norm(torch.stack(norms))}, iteration, run, dist)
    scaler.step(optimizer)   # skipped when the gradient is not finite
    scaler.update()


def step_losses(model, spec: ModelSpec, batch: dict, device, *, loss: LossSettings,
                distill: DistillSettings, teacher: Teacher | None = None, with_stats: bool = False,
                dist: DistInfo = DistInfo(), amp: str = AMP_OFF) -> tuple[dict, dict]:
    """Focal + box loss on the batch's (pseudo-)labels, plus the ADL when the batch carries
    teacher scores (shards) or a live teacher is given (which then scores the batch, replacing
    any cached scores).

    ``amp`` (``solver.amp``): the student's forward pass runs under autocast to bf16 / fp16;
    its outputs are cast back to float32, and the losses run in float32, outside autocast.

    Under DDP the normalisers (#foreground anchors, the ADL's Σ q^θ) are those of the global
    batch and each process's losses are scaled by the number of processes, so the gradient
    DDP averages equals that of one process on the whole batch."""
    images = batch["images"].to(device, non_blocking=True)
    with autocast(device, amp_precision(amp)):
        cls_logits, box_deltas = model(images)
    cls_logits, box_deltas = cls_logits.float(), box_deltas.float()
    anchors = spec.anchor_layout.anchors(tuple(images.shape[-2:])).to(device)
    labels, box_targets = build_targets(anchors, [{k: v.to(device, non_blocking=True) for k, v in t.items()}
                                                  for t in batch["targets"]], convention=spec.boxes)
    losses = detection_losses(cls_logits, box_deltas, labels, box_targets, alpha=loss.focal_alpha,
                              gamma=loss.focal_gamma, beta=loss.smooth_l1_beta)
    stats = {}
    probs, mask, normalizer = teacher_targets(batch, images, spec, device, teacher=teacher,
                                              power=distill.normalizer_power)
    if dist.enabled:  # detection_losses normalised by this process's max(#foreground, 1)
        local_fg = float((labels >= 0).sum())
        num_fg, normalizer = _global_sums([local_fg, normalizer], device)
        share = max(local_fg, 1.0) / max(num_fg, 1.0) * dist.world_size
        losses = {k: v * share for k, v in losses.items()}
    if probs is None:
        return losses, stats
    adl_labels = torch.where(mask, labels, torch.full_like(labels, IGNORE))
    normalizer = max(normalizer, 1.0)
    losses["loss_adl"] = distill.weight * dist.world_size * adaptive_distillation_loss(
        cls_logits, probs, adl_labels, normalizer, alpha=distill.alpha, gamma=distill.gamma,
        beta=distill.beta, temperature=distill.temperature)
    if with_stats:
        stats = {"adl_normalizer": normalizer,
                 "mean_adw": mean_adaptive_weight(cls_logits.detach(), probs, adl_labels,
                                                  gamma=distill.gamma, beta=distill.beta)}
    return losses, stats


def teacher_targets(batch: dict, images: torch.Tensor, spec: ModelSpec, device, *, teacher=None,
                    power: float = NORMALIZER_POWER):
    """The ADL's teacher side of a batch: probs (N, HWA, C) on the batch grid, mask (N, HWA) of
    the anchors on each view's own grid, and the normaliser Σ q^θ of the batch's views (before
    max(., 1)); (None, None, 0.0) when the batch has no teacher. From the live ``teacher``
    when given (each view alone, as cache-logits scores it), else from the batch's cached
    scores (shards)."""
    if teacher is not None:
        probs, mask = teacher.batch_view_probs(images, batch["recipes"], spec.preprocessing)
        normalizer = float(sum((probs[i][mask[i]].double() ** power).sum() for i in range(len(probs))))
        return probs, mask, normalizer
    if "teacher_probs" in batch:
        return (batch["teacher_probs"].to(device, non_blocking=True),
                batch["teacher_mask"].to(device, non_blocking=True), batch["normalizer"])
    return None, None, 0.0


def check_finite(values: dict[str, torch.Tensor], iteration: int, run: RunDir,
                 dist: DistInfo = DistInfo()) -> None:
    """Stop training (UserError) when a loss term or the gradient norm is NaN or infinite,
    before the optimizer step: the last checkpoint written stays the last good one. Under
    DDP every process stops together."""
    finite = all(bool(torch.isfinite(v.detach()).all()) for v in values.values())
    if dist.enabled:
        flag = torch.tensor([0.0 if finite else 1.0], device=next(iter(values.values())).device)
        torch.distributed.all_reduce(flag)
        finite = float(flag) == 0.0
    if finite:
        return
    shown = ", ".join(f"{k}={float(v.detach()):g}" for k, v in values.items())
    checkpoints = run.checkpoints()
    last = str(checkpoints[-1]) if checkpoints else "none (no checkpoint written yet)"
    raise UserError(f"iteration {iteration}: non-finite training loss ({shown or 'on another process'}); "
                    f"stopped before the update. Last good checkpoint: {last}. Lower solver.base_lr "
                    "or set solver.clip_grad_norm, and restart (--set model.init=CHECKPOINT starts "
                    "from that checkpoint's weights)")


def _global_sums(values: list[float], device) -> list[float]:
    """Element-wise sums over all processes (float64)."""
    total = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(total)
    return total.tolist()


class _Meter:
    """Images/s, skipped images and the share of step time spent waiting for data."""

    def __init__(self):
        self.t_start = time.perf_counter()
        self.images = self.skipped = 0
        self.t_data = self.t_step = 0.0

    def add(self, images, skipped, t_data, t_step):
        self.images += images
        self.skipped += skipped
        self.t_data += t_data
        self.t_step += t_step

    def flush(self) -> dict:
        now = time.perf_counter()
        out = {"images_per_s": self.images / max(now - self.t_start, 1e-9),
               "data_fraction": self.t_data / max(self.t_step, 1e-9), "skipped_images": self.skipped}
        self.__init__()
        return out


def _categories(cfg: dict, shard_dirs: dict) -> list[dict]:
    """The classes to train: from the teacher shards' manifest, else the train annotations."""
    for shard_dir in shard_dirs.values():
        if shard_dir:
            from sadpipe.engine.shard_stream import manifest_categories
            return manifest_categories(shard_dir)
    if not cfg["data"]["train_annotations"]:
        raise UserError("config: data.train_annotations is empty; set it in the config or with "
                        "--set data.train_annotations=PATH")
    return read_coco_json(cfg["data"]["train_annotations"])["categories"]


def _check_cached_teacher(shard_dir, manifest: dict, teacher) -> None:
    cached = manifest["header"]["teacher"]["sha256"]
    if file_sha256(teacher) != cached:
        raise UserError(f"{teacher}: not the teacher {shard_dir} was cached from (sha256 "
                        f"{cached[:12]}...); with --teacher-shards, --teacher rescores the cached "
                        "views with the teacher that made them")


def _unwrap(model):
    return model.module if isinstance(model, DistributedDataParallel) else model


def _save_training_checkpoint(run: RunDir, spec, model, optimizer, iteration: int, cfg: dict, *,
                              wall_time: float, scaler=None):
    training = {"iteration": iteration, "optimizer": optimizer.state_dict(), "wall_time_s": wall_time}
    if scaler is not None:   # fp16: the loss scale goes on where it was
        training["grad_scaler"] = scaler.state_dict()
    save_checkpoint(run.checkpoint_path(iteration), spec, _unwrap(model), config=cfg, training=training)
    run.prune_checkpoints(cfg["train"]["keep_checkpoints"])


def _resume(run: RunDir, model, optimizer, scaler=None) -> tuple[int, float]:
    """Load the newest checkpoint; returns the iteration to continue from and the wall time
    spent up to it ((0, 0.0) if none)."""
    checkpoints = run.checkpoints()
    if not checkpoints:
        return 0, 0.0
    payload = load_checkpoint(checkpoints[-1])
    model.load_state_dict(payload["state_dict"])
    optimizer.load_state_dict(payload["training"]["optimizer"])
    if scaler is not None and "grad_scaler" in payload["training"]:
        scaler.load_state_dict(payload["training"]["grad_scaler"])
    iteration = int(payload["training"]["iteration"])
    run.truncate_metrics(iteration)
    log.info("resumed from %s at iteration %d", checkpoints[-1], iteration)
    return iteration, float(payload["training"].get("wall_time_s", 0.0))


def run_provenance(cfg: dict, sources: dict, *, command: str, iterations: int, wall_time: float,
                   dist: DistInfo, teacher_path=None) -> dict:
    """How a trained model was made (stored in ``model_final.pt`` beside its ``config``): the
    command, iterations, wall time (summed over resumes), the data of each batch source, the
    files the weights started from, and the live teacher (``teacher_path``) if any, with their
    sha256 (a cache's teacher is recorded in its manifest)."""
    data = {}
    for name, source in sources.items():
        if isinstance(source, ShardSource):
            data[name] = {"shards": str(source.shard_dir),
                          "manifest_sha256": file_sha256(source.shard_dir / "manifest.json")}
        else:
            data[name] = dataset_provenance(source.annotations)
    started_from = {key: {"path": str(cfg["model"][key]), "sha256": file_sha256(cfg["model"][key])}
                    for key in ("body_weights", "init") if cfg["model"][key]}
    return {"command": command, "iterations": iterations, "wall_time_s": round(wall_time, 1),
            "images_per_s": round(iterations * cfg["solver"]["images_per_batch"] / max(wall_time, 1e-9), 2),
            "data": data, "started_from": started_from,
            **({"teacher": {"path": str(teacher_path), "sha256": file_sha256(teacher_path)}}
               if teacher_path else {}),
            "processes": dist.world_size,
            "threads": torch.get_num_threads(), "torch_version": str(torch.__version__)}


def dataset_provenance(annotations) -> dict:
    """A COCO file's path, sha256 and size; for `sadpipe toy-data` output also how it was
    generated (generator version, seed, image counts)."""
    dataset = read_coco_json(annotations)
    out = {"annotations": str(annotations), "sha256": file_sha256(annotations),
           "images": len(dataset["images"]), "boxes": len(dataset["annotations"])}
    generator = (dataset.get("info") or {}).get(TOY_PARAMS_KEY)
    if generator is not None:
        out["generator"] = generator
    return out


def _load_body_weights(model, spec: ModelSpec, path) -> None:
    """A ``sadpipe pretrain`` body file into the detector's body (small archs only)."""
    if ARCHS[spec.arch].family != "regnet":
        raise UserError(f"config: model.body_weights is for the small archs; {spec.arch} takes "
                        "model.pretrained = true (ImageNet)")
    from sadpipe import zoo
    _unwrap(model).backbone.body.load_state_dict(zoo.load_body(path, arch=spec.arch, norm=spec.norm))


def _load_init(model, spec: ModelSpec, path, *, reset_classes: bool = False) -> None:
    """``model.init``: every weight from a checkpoint of the same arch and variant. With
    ``reset_classes`` (``model.init_reset_classes``) its classes may be others (e.g. COCO's
    from ``sadpipe import-torchvision``): the class layer, the one part whose shape and meaning
    depend on the classes, keeps its fresh init (N(0, 0.01), prior bias); body, FPN, box head
    and the class tower come from the checkpoint."""
    payload = load_checkpoint(path)
    init = ModelSpec.from_dict(payload["model"])
    if init.arch != spec.arch or (init.num_classes != spec.num_classes and not reset_classes):
        raise UserError(f"{path}: model.init is a {init.arch} with {init.num_classes} classes, "
                        f"the config trains a {spec.arch} with {spec.num_classes}"
                        + ("" if init.arch != spec.arch else
                           " (model.init_reset_classes = true starts its class layer afresh)"))
    theirs, ours = init.variant(), spec.variant()
    for key, value in theirs.items():
        if ours[key] != value:
            raise UserError(f"{path}: model.init has {key} = {value!r}, the config {ours[key]!r}; "
                            "its weights only mean something with its own setting")
    if not reset_classes:
        model.load_state_dict(payload["state_dict"])
        return
    class_layer = {f"{CLS_LOGITS}.weight", f"{CLS_LOGITS}.bias"}
    missing, unexpected = model.load_state_dict(
        {k: v for k, v in payload["state_dict"].items() if k not in class_layer}, strict=False)
    if set(missing) != class_layer or unexpected:
        raise UserError(f"{path}: model.init does not fit a {spec.arch} "
                        f"(missing {sorted(set(missing) - class_layer)[:3]}, unexpected {unexpected[:3]})")
