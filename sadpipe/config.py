"""Training configuration: TOML files layered on defaults, plus ``--set key=value``.

Defaults are the paper's (README: conventions of the release). A config file or override may
only set keys that exist here, with a value of the same type; anything else is a one-line error.
"""
from __future__ import annotations

import copy
import tomllib

from cuda_ops.constants import (
    ADL_ALPHA,
    ADL_BETA,
    ADL_GAMMA,
    AMP_OFF,
    FOCAL_ALPHA,
    FOCAL_GAMMA,
    FP32,
    NORMALIZER_POWER,
    SMOOTH_L1_BETA,
)
from sadpipe.errors import UserError
from sadpipe.fileio import load_toml_file
from sadpipe.validation import is_int, is_number, passes, show_value

DEFAULTS: dict = {
    "model": {
        "arch": "resnet50",
        "pretrained": False,          # pretrained body: ImageNet (paper archs, downloads) or
                                      # the zoo's toy-pretrained body (toy archs, shipped)
        "body_weights": "",           # a `sadpipe pretrain` body file instead (toy archs)
        "init": "",                   # sadpipe checkpoint to start from (same arch, classes, variant)
        "init_reset_classes": False,  # with init: a fresh class layer, so the init may have other
                                      # classes (torchvision's COCO RetinaNet for yours; README)
        "norm": "bn",                 # small bodies: bn | gn | frozen_bn (paper bodies: frozen BN);
                                      # affine: frozen BN with eps 0 (Detectron's AffineChannel)
        "stride_in_1x1": False,       # resnet bodies: stride in the first 1x1 conv (MSRA R-50/101)
        "p6_from": "p5",              # input of the P6 conv: p5 (torchvision) | c5 (Detectron)
        "anchor_size_factor": 4.0,    # anchor base size = factor × stride
        "scales_per_octave": 3,
        "aspect_ratios": [0.5, 1.0, 2.0],   # height / width in anchor order (release: [1, 2, 0.5])
        "strides": [8, 16, 32, 64, 128],
        "anchor_convention": "torchvision",  # torchvision | detectron (modeling/anchors.py)
        "box_convention": "torchvision",     # torchvision | detectron: "+1" boxes (modeling/boxes.py)
    },
    "input": {
        "min_size": 600,              # test-time short side
        "max_size": 1000,
        "train_min_sizes": [600],     # one is drawn per image at train time
        "flip": True,                 # random horizontal flip at train time
        "mean": [0.485, 0.456, 0.406],   # in channel_order, for pixels in [0, pixel_range]
        "std": [0.229, 0.224, 0.225],
        "channel_order": "rgb",       # rgb | bgr (Detectron's models)
        "pixel_range": 1.0,           # 1 (torchvision) | 255 (Detectron: mean = pixel means, std 1)
        "size_divisibility": 0,       # pad inputs to a multiple of this; 0: the coarsest stride
    },
    "data": {
        "train_annotations": "",
        "train_images": "",
        "pseudo_annotations": "",     # pseudo-labeled set (online distillation only)
        "pseudo_images": "",
        "strict_images": False,       # fail on an unreadable image instead of skipping it
        "num_workers": 0,
        "val_annotations": "",        # the val set train.eval_period evaluates on
        "val_images": "",
    },
    "solver": {
        "optimizer": "sgd",           # sgd (the paper) | adamw (fast from-scratch toy runs)
        "images_per_batch": 16,       # global batch (all processes together)
        "base_lr": 0.01,
        "momentum": 0.9,              # sgd momentum; adamw beta1
        "weight_decay": 1e-4,
        "warmup_iters": 1000,
        "warmup_factor": 1.0 / 3.0,
        "max_iter": 270000,
        "steps": [180000, 240000],
        "gamma": 0.1,
        "clip_grad_norm": 0.0,        # 0 disables
        "amp": AMP_OFF,               # mixed precision of the student: off | bf16 | fp16 (+ loss scaling)
    },
    "loss": {
        "focal_alpha": FOCAL_ALPHA,
        "focal_gamma": FOCAL_GAMMA,
        "smooth_l1_beta": SMOOTH_L1_BETA,
    },
    "distill": {                      # used with --teacher-shards / --teacher
        "alpha": ADL_ALPHA,
        "gamma": ADL_GAMMA,
        "beta": ADL_BETA,
        "normalizer_power": NORMALIZER_POWER,
        "temperature": 1.0,           # softens teacher and student logits by 1/T (off at 1)
        "weight": 1.0,                # ADL weight in the total loss
        "pattern": ["labeled", "pseudo"],  # batch sources, cycled: the alternation ratio
        "teacher_precision": FP32,    # the teacher's: the live one runs at it, a cache must be made
                                      # at it (fp32 | bf16 | fp16; cache-logits --precision)
    },
    "train": {
        "seed": 0,
        "device": "auto",             # auto | cpu | cuda
        "log_period": 20,
        "checkpoint_period": 5000,
        "keep_checkpoints": 2,
        "eval_period": 0,             # > 0: val AP every N iterations and at the end, model_best.pt
    },
}


def load_config(path=None, overrides: tuple[str, ...] = ()) -> dict:
    """Defaults ← TOML file ← ``key=value`` overrides (dotted keys, TOML values)."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        _merge(cfg, load_toml_file(path, "config file"), source=str(path))
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise UserError(f"--set {item}: expected key=value")
        set_value(cfg, key.strip(), parse_value(text.strip()), source="--set")
    return cfg


def parse_value(text: str):
    """A TOML value (number, bool, list, quoted string); a bare word is a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def set_value(cfg: dict, dotted: str, value, *, source: str) -> None:
    *parents, leaf = dotted.split(".")
    node = cfg
    for i, part in enumerate(parents):
        if not isinstance(node.get(part), dict):
            raise UserError(f"{source}: unknown config key '{'.'.join(parents[:i + 1])}'")
        node = node[part]
    if leaf not in node or isinstance(node[leaf], dict):
        raise UserError(f"{source}: unknown config key '{dotted}'")
    node[leaf] = _checked(node[leaf], value, dotted, source)


def _merge(cfg: dict, data: dict, *, source: str) -> None:
    for section, values in data.items():
        if not isinstance(values, dict):
            raise UserError(f"{source}: unknown config key '{section}' (keys live in sections "
                            "like [solver])")
        if not isinstance(cfg.get(section), dict):
            raise UserError(f"{source}: unknown config section '{section}'")
        for key, value in values.items():
            set_value(cfg, f"{section}.{key}", value, source=source)


# What a key accepts, by the type of its default (else that type): an int is taken for a float.
_ACCEPTS = {int: is_int, float: is_number}


def _checked(default, value, key: str, source: str):
    if not passes(value, _ACCEPTS.get(type(default), type(default))):
        raise UserError(f"{source}: config key '{key}' expects {type(default).__name__}, "
                        f"got {show_value(value)}")
    return float(value) if isinstance(default, float) else value


def dump_toml(cfg: dict) -> str:
    """Render a resolved config as TOML (sections of scalars and flat lists)."""
    lines = []
    for section, values in cfg.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
        lines.append("")
    return "\n".join(lines)


def toml_value(v) -> str:
    """A config value in TOML spelling (strings quoted, lists bracketed)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return repr(v)
