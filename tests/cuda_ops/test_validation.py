"""Bad arguments raise LossInputError (a ValueError) whose one-line message names the argument."""
import pytest
import torch

import cuda_ops

X = torch.zeros(4, 3)
Q = torch.full((4, 3), 0.5)
LABELS = torch.tensor([0, -1, -2, 2])


def _focal(**overrides):
    args = dict(logits=X, labels=LABELS)
    args.update(overrides)
    return cuda_ops.sigmoid_focal_loss(args.pop("logits"), args.pop("labels"), **args)


def _adl(**overrides):
    args = dict(student_logits=X, teacher_probs=Q, labels=LABELS)
    args.update(overrides)
    return cuda_ops.adaptive_distillation_loss(
        args.pop("student_logits"), args.pop("teacher_probs"), args.pop("labels"), **args
    )


FOCAL_CASES = [
    ("logits", dict(logits=X.double())),  # kernels compute in float32
    ("logits", dict(logits=X.half(), backend="torch")),
    ("logits", dict(logits=torch.zeros(4))),
    ("logits", dict(logits=torch.zeros(4, 0))),
    ("logits", dict(logits=X.numpy())),
    ("labels", dict(labels=LABELS.int())),
    ("labels", dict(labels=LABELS[:3])),
    ("labels", dict(labels=LABELS.reshape(2, 2))),
    ("labels", dict(labels=torch.tensor([0, -3, 1, 1]))),
    ("labels", dict(labels=torch.tensor([0, 3, 1, 1]))),
    ("labels", dict(labels=[0, 1, 2, 0])),
    ("alpha", dict(alpha=1.5)),
    ("alpha", dict(alpha=float("nan"))),
    ("gamma", dict(gamma=-1.0)),
    ("gamma", dict(gamma="2")),
    ("normalizer", dict(normalizer=0.0)),
    ("normalizer", dict(normalizer=-2)),
    ("normalizer", dict(normalizer=float("inf"))),
    ("normalizer", dict(normalizer=torch.ones(2))),
    ("normalizer", dict(normalizer=torch.tensor(0.0))),
    ("normalizer", dict(normalizer=True)),
    ("backend", dict(backend="cuda")),
    ("backend", dict(backend="numba-cpu", logits=X.to("meta"), labels=LABELS.to("meta"))),
]

ADL_CASES = [
    ("student_logits", dict(student_logits=X.double(), backend="numba-cpu")),
    ("teacher_probs", dict(teacher_probs=Q.double())),
    ("teacher_probs", dict(teacher_probs=Q[:2])),
    ("teacher_probs", dict(teacher_probs=Q.to("meta"))),
    ("labels", dict(labels=torch.tensor([0, 1, 5, 0]))),
    ("gamma", dict(gamma=0.5)),
    ("beta", dict(beta=1.5)),
    ("alpha", dict(alpha=-0.1)),
    ("normalizer_power", dict(normalizer_power=0.0)),
    ("normalizer", dict(normalizer=torch.tensor(-1.0))),
    ("backend", dict(backend="gpu")),
]


@pytest.mark.parametrize("argument,overrides", FOCAL_CASES)
def test_focal_rejects_bad_argument(argument, overrides):
    with pytest.raises(cuda_ops.LossInputError) as info:
        _focal(**overrides)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert message.startswith(f"{argument}: ") and "\n" not in message


@pytest.mark.parametrize("argument,overrides", ADL_CASES)
def test_adl_rejects_bad_argument(argument, overrides):
    with pytest.raises(ValueError) as info:
        _adl(**overrides)
    assert str(info.value).startswith(f"{argument}: ")


def test_power_sum_rejects_bad_arguments():
    with pytest.raises(ValueError, match="^power: "):
        cuda_ops.power_sum(Q, 0.0)
    with pytest.raises(ValueError, match="^teacher_probs: "):
        cuda_ops.power_sum(Q[0])
    with pytest.raises(ValueError, match="^backend: "):
        cuda_ops.power_sum(Q, backend="numpy")


def test_valid_arguments_pass():
    assert torch.isfinite(_focal(normalizer=torch.tensor(2, dtype=torch.int64)))
    assert torch.isfinite(_adl(gamma=0.0, beta=-3.0, normalizer=1))
