"""What a stage's work is: images generated, trained on or run through the teacher, views
cached. The estimate prices it before a run (:mod:`sadpipe.pipeline.estimate`); the report
divides it by the wall time after (:mod:`sadpipe.pipeline.report`).

A stage's options are read with its command's own click parser (:func:`command_options`), so
names, defaults and types are the command's, never re-parsed by hand.
"""
from __future__ import annotations

import importlib
import json

from sadpipe.config import load_config
from sadpipe.pipeline.stage import Stage

UNIT_NAMES = {"toy-data": "images", "train": "images", "pseudo-label": "images",
              "cache-logits": "views", "eval": "images"}
SPLITS = ("train", "unlabeled", "val")
DISTILL = "+distill"          # price-key suffix of a student trained from teacher shards


def command_options(stage: Stage) -> dict:
    """The stage's arguments as its command parses them: ``{parameter name: value}``, defaults
    filled in (e.g. ``train``: ``config_path``, ``overrides``, ``teacher_shards``)."""
    from sadpipe.commands import COMMANDS

    module = importlib.import_module(f"sadpipe.commands.{dict(COMMANDS)[stage.command]}")
    with module.command.make_context(stage.command, list(stage.args),
                                     resilient_parsing=True) as ctx:
        return dict(ctx.params)


def image_counts(pipeline) -> dict:
    """{"train", "unlabeled", "val"}: image counts of the pipeline's data (toy: from the
    generator's options; COCO files: from the files)."""
    data = pipeline.stages[0]
    if data.command == "toy-data":
        options = command_options(data)
        return {split: options[f"num_{split}"] for split in SPLITS}
    return {split: len(json.loads(data.outputs[f"{split}_annotations"].read_text())["images"])
            for split in SPLITS}


def stage_work(stage: Stage, counts: dict, pipeline) -> tuple[tuple, float]:
    """(kind, units of work) of one stage: kind is ``(command, arch or None)``, the arch with
    ``DISTILL`` appended for a student trained from teacher shards."""
    if stage.command == "toy-data":
        return (stage.command, None), float(sum(counts.values()))
    options = command_options(stage)
    if stage.command == "train":
        cfg = train_config(options)
        arch = cfg["model"]["arch"] + (DISTILL if options["teacher_shards"] else "")
        return ("train", arch), float(cfg["solver"]["max_iter"] * cfg["solver"]["images_per_batch"])
    if stage.command == "pseudo-label":
        return (stage.command, None), float(counts["unlabeled"])
    if stage.command == "cache-logits":
        labeled = str(pipeline.stages[0].outputs["train_annotations"])
        pseudo = str(options["annotations"]) != labeled  # the pseudo set: train + unlabeled
        images = counts["train"] + (counts["unlabeled"] if pseudo else 0)
        return (stage.command, None), float(len(options["views"].split(",")) * images)
    if stage.command == "eval":
        return ("eval", None), float(counts["val"])
    return ("eval", None), 0.0


def train_config(options: dict) -> dict:
    """A train stage's config (its file and ``--set`` overrides, data paths left out: they
    may not exist before the run)."""
    overrides = tuple(o for o in options["overrides"] if not o.startswith(("data.", "model.body")))
    return load_config(options["config_path"], overrides)


def eval_work(stage: Stage, counts: dict) -> float:
    """Val images a train stage evaluates while it trains (``train.eval_period``: the val
    set every N iterations and after the last); 0 for other stages."""
    if stage.command != "train":
        return 0.0
    cfg = train_config(command_options(stage))
    period, iterations = cfg["train"]["eval_period"], cfg["solver"]["max_iter"]
    if period <= 0:
        return 0.0
    return float((iterations // period + (iterations % period != 0)) * counts["val"])
