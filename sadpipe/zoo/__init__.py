"""The toy model zoo: files shipped with sadpipe for the embedded world, as the paper's world
ships ImageNet bodies and released teachers.

* ``toy_teacher_body.pt``, ``toy_student_body.pt``: small bodies pretrained on object crops of
  the generator's own ``pretrain`` split (``sadpipe pretrain``); ``model.pretrained = true``
  loads them for the toy archs. ``toy_student_mid_body.pt``: the same for the toy paper
  protocol's student (``pipelines/toy_paper.toml``).
* ``toy_teacher.pt``: a toy teacher trained long, once (a self-describing sadpipe checkpoint).
* ``toy_student_baseline.pt``, ``toy_student_sad.pt``: the toy paper protocol's students
  (``toy_student_mid``), trained like the teacher, without and with SAD from the cache.

Every file records how it was made (``provenance``: the exact command and config, generator
version, seed, data sizes, iterations or epochs, wall time, and its measured figures).
``pipelines/toy_zoo.toml`` remakes the teacher and the first two bodies from nothing,
``pipelines/toy_paper.toml`` the toy paper protocol's files.
"""
from __future__ import annotations

from pathlib import Path

from sadpipe.errors import UserError
from sadpipe.serialization import load_tagged

ZOO_DIR = Path(__file__).resolve().parent
BODY_FORMAT = "sadpipe-body"
BODY_VERSION = 1
TEACHER_FILE = "toy_teacher.pt"


def body_path(arch: str) -> Path:
    """Where the zoo keeps the pretrained body of a small arch."""
    return ZOO_DIR / f"{arch}_body.pt"


def teacher_path() -> Path:
    """The zoo's trained toy teacher (a sadpipe checkpoint)."""
    return ZOO_DIR / TEACHER_FILE


def read_body_file(path) -> dict:
    """A body file's payload: {"format", "version", "arch", "norm", "state_dict",
    "provenance"}; a missing or foreign file is a UserError naming it."""
    return load_tagged(path, format_name=BODY_FORMAT, version=BODY_VERSION, what="body file",
                       missing="no pretrained body file (make one with `sadpipe pretrain`)",
                       foreign=f"not a sadpipe pretrained body (no '{BODY_FORMAT}' header)")


def load_body(path, *, arch: str, norm: str) -> dict:
    """The body state dict of ``path``, checked to be a body of ``arch`` with ``norm``."""
    payload = read_body_file(path)
    if payload["arch"] != arch:
        raise UserError(f"{path}: a pretrained {payload['arch']} body, the model is a {arch}")
    if payload["norm"] != norm:
        raise UserError(f"{path}: pretrained with model.norm '{payload['norm']}', the model uses "
                        f"'{norm}'")
    return payload["state_dict"]
