"""The pipeline's ``[data]`` section: the embedded generator, or COCO-format paths.

Either way it becomes the first stage, named ``data``, whose outputs every later stage refers
to: ``${data.train_annotations}``, ``${data.train_images}``, ``${data.val_annotations}``,
``${data.val_images}``, ``${data.unlabeled_annotations}``, ``${data.unlabeled_images}`` and
``${data.images_root}`` (the deepest folder holding both the train and the unlabeled images:
``pseudo-label --merge-with`` writes file names relative to it).

* ``source = "toy"``: ``sadpipe toy-data WORKDIR/data`` with ``seed``, ``num_train``,
  ``num_unlabeled``, ``num_val``.
* ``source = "coco"``: the six paths are given (relative ones are taken from ``root``, itself
  relative to the current folder); nothing runs.

``teacher_checkpoint`` (both sources, default empty): a trained teacher; a stage that lists it
under ``given`` is then not run. ``${zoo_dir}`` in it names the model zoo's folder
(``${zoo_dir}/toy_teacher.pt``: the shipped toy teacher).
"""
from __future__ import annotations

import os
from pathlib import Path

from sadpipe.data.toy import annotation_path, image_dir
from sadpipe.pipeline.references import BadReference, substitute
from sadpipe.pipeline.stage import Stage
from sadpipe.validation import is_int
from sadpipe.zoo import ZOO_DIR

DATA_STAGE = "data"
SPLITS = ("train", "val", "unlabeled")
PATH_KEYS = tuple(f"{split}_{kind}" for split in SPLITS for kind in ("annotations", "images"))
IMAGES_ROOT = "images_root"
ZOO_REFERENCE = "zoo_dir"
TOY_DEFAULTS = {"seed": 0, "num_train": 300, "num_unlabeled": 3000, "num_val": 300,
                "teacher_checkpoint": ""}
COCO_DEFAULTS = {"root": "", **{key: "" for key in PATH_KEYS}, "teacher_checkpoint": ""}
DEFAULTS = {"toy": TOY_DEFAULTS, "coco": COCO_DEFAULTS}
TOY_COUNTS = ("seed", "num_train", "num_unlabeled", "num_val")
TOY_FLAGS = {"seed": "--seed", "num_train": "--num-train", "num_unlabeled": "--num-unlabeled",
             "num_val": "--num-val"}


class DataError(ValueError):
    """A bad ``[data]`` value; the message starts with the key (``data.num_val: ...``)."""


def with_defaults(source, section: dict) -> dict:
    """``section`` (without ``source``) on top of the source's defaults; unknown keys refused."""
    if source not in DEFAULTS:
        raise DataError(f"data.source: must be one of {', '.join(map(repr, DEFAULTS))}, "
                        f"got {source!r}")
    unknown = sorted(set(section) - set(DEFAULTS[source]))
    if unknown:
        raise DataError(f"data.{unknown[0]}: unknown key for source = {source!r} "
                        f"(known: {', '.join(DEFAULTS[source])})")
    return {**DEFAULTS[source], **section}


def data_stage(source: str, settings: dict, workdir: Path) -> Stage:
    """The ``data`` stage for checked ``settings`` (see :func:`with_defaults`)."""
    _check_types(settings)
    if source == "toy":
        return _toy_stage(settings, workdir)
    return _coco_stage(settings)


def data_values(settings: dict) -> dict[str, object]:
    """The settings as ``data.KEY`` namespace entries (teacher checkpoint made absolute)."""
    values = {f"data.{key}": value for key, value in settings.items()}
    if settings["teacher_checkpoint"]:
        try:
            path = substitute(settings["teacher_checkpoint"], {ZOO_REFERENCE: str(ZOO_DIR)})
        except BadReference as err:
            raise DataError(f"data.teacher_checkpoint: {err} (only ${{{ZOO_REFERENCE}}} is "
                            "known here)") from None
        values["data.teacher_checkpoint"] = os.path.abspath(path)
    return values


def _check_types(settings: dict) -> None:
    for key, value in settings.items():
        if key in TOY_COUNTS:
            if not is_int(value) or value < 0:
                raise DataError(f"data.{key}: must be an integer >= 0, got {value!r}")
        elif not isinstance(value, str):
            raise DataError(f"data.{key}: must be a string (a path), got {value!r}")


def _toy_stage(settings: dict, workdir: Path) -> Stage:
    root = workdir / DATA_STAGE
    outputs = {}
    for split in SPLITS:
        outputs[f"{split}_annotations"] = annotation_path(root, split)
        outputs[f"{split}_images"] = image_dir(root, split)
    outputs[IMAGES_ROOT] = _common_parent(outputs["train_images"], outputs["unlabeled_images"])
    args = [str(root)]
    for key, flag in TOY_FLAGS.items():
        args += [flag, str(settings[key])]
    return Stage(name=DATA_STAGE, command="toy-data", args=tuple(args), outputs=outputs,
                 clean=(root,))


def _coco_stage(settings: dict) -> Stage:
    root = Path(os.path.abspath(settings["root"] or "."))
    outputs = {}
    for key in PATH_KEYS:
        if not settings[key]:
            raise DataError(f"data.{key}: required with source = \"coco\" (a path, relative "
                            "to data.root)")
        outputs[key] = Path(os.path.abspath(root / settings[key]))
    outputs[IMAGES_ROOT] = _common_parent(outputs["train_images"], outputs["unlabeled_images"])
    return Stage(name=DATA_STAGE, command=None, outputs=outputs, given=True)


def _common_parent(a: Path, b: Path) -> Path:
    return Path(os.path.commonpath([a, b]))
