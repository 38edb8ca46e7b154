"""Numeric precision of a network's forward pass: float32, or mixed precision under
``torch.autocast`` to bfloat16 or float16 (README, "Mixed precision").

Three settings choose it: ``solver.amp`` (off | bf16 | fp16) for the student a training run
updates; ``--precision`` (fp32 | bf16 | fp16) for the teacher of ``pseudo-label`` and
``cache-logits`` and the model of ``eval``; ``distill.teacher_precision`` for the live teacher
of ``train --teacher``, and the precision a teacher cache must have been made at.

Only the network's forward pass runs under autocast. Its outputs are cast to float32 before
anything reads them: the fused losses (``cuda_ops``) take float32 logits, and the teacher's
sigmoid, the ADL normaliser and post-processing all run in float32. float16 has a narrow
exponent range, so training in fp16 scales the loss (:func:`grad_scaler`); bfloat16 has
float32's range and needs no scaling.
"""
from __future__ import annotations

import contextlib

import torch

from cuda_ops.constants import AMP_OFF, FP32, PRECISIONS
from sadpipe.errors import UserError

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_choice(value: str, known: tuple[str, ...], where: str) -> str:
    """``value`` when it is one of ``known``; else the one-line error ``<where> '<value>' is
    unknown (known: ...)``."""
    if value not in known:
        raise UserError(f"{where} '{value}' is unknown (known: {', '.join(known)})")
    return value


def amp_precision(amp: str) -> str:
    """The forward precision of a ``solver.amp`` mode: "off" is fp32."""
    return FP32 if amp == AMP_OFF else amp


def autocast(device, precision: str):
    """The context a network's forward pass runs in at ``precision`` (one of ``PRECISIONS``)
    on ``device`` ("cpu", "cuda", a torch.device): autocast, or nothing for fp32."""
    check_choice(precision, PRECISIONS, "precision")
    if precision == FP32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=AUTOCAST_DTYPES[precision])


def grad_scaler(device, amp: str) -> torch.amp.GradScaler | None:
    """The loss scaler of fp16 training (None for off and bf16, which need none)."""
    if amp != "fp16":
        return None
    return torch.amp.GradScaler(torch.device(device).type)
