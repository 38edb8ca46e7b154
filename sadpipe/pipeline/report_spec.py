"""The pipeline's ``[report]`` section: which stages hold the three models' evaluations and the
teacher caches.

::

    [report]
    teacher = { model = "toy_teacher", eval = "eval_teacher" }
    baseline = { model = "toy_student", eval = "eval_student" }    # student without a teacher
    distilled = { model = "toy_student", eval = "eval_student_sad" }
    caches = ["cache_labeled", "cache_pseudo"]
    pseudo_labels = "pseudo_label"     # optional: its pictures join the report's gallery
    # optional: the same student distilled from the live teacher
    distilled_live = { model = "toy_student", eval = "eval_live" }

    [report.paper]        # optional: the paper's row (AP in %), shown beside this run's
    student_model = "RetinaNet R-50"
    student_baseline = 34.3
    teacher_model = "RetinaNet R-101"
    teacher_baseline = 36.0
    distilled = 36.5

An ``eval`` stage must have the outputs ``metrics`` (metrics.json) and ``pr_curve``
(pr_curve.json) of ``sadpipe eval``; a cache stage the output ``manifest`` (manifest.json of
``sadpipe cache-logits``); the ``pseudo_labels`` stage the output ``labels`` (the json of
``sadpipe pseudo-label``). The gallery shows the pictures ``--draw N`` leaves next to those
outputs (``drawings/``), when there are some.
"""
from __future__ import annotations

from dataclasses import dataclass

from sadpipe.validation import check_keys, expect, fail, is_list_of, is_number

ROLES = ("teacher", "baseline", "distilled")
LIVE_ROLE = "distilled_live"
EVAL_OUTPUTS = ("metrics", "pr_curve")
CACHE_OUTPUT = "manifest"
PSEUDO_OUTPUT = "labels"
PAPER_NAMES = ("student_model", "teacher_model")
PAPER_FIGURES = ("student_baseline", "teacher_baseline", "distilled")
REPORT_KEYS = (*ROLES, LIVE_ROLE, "caches", "pseudo_labels", "paper")


@dataclass(frozen=True)
class ModelEntry:
    model: str        # shown in the tables, e.g. "RetinaNet R-50"
    eval_stage: str   # stage whose outputs are metrics.json and pr_curve.json


@dataclass(frozen=True)
class ReportSpec:
    models: dict[str, ModelEntry]   # role (ROLES, and LIVE_ROLE when given) -> entry
    caches: tuple[str, ...]         # stages whose output "manifest" is a shard manifest
    pseudo_labels: str | None = None   # stage whose output "labels" is a pseudo-label json
    paper: dict | None = None       # the paper's row: PAPER_NAMES (str), PAPER_FIGURES (AP %)


def parse_report(section, stages, *, where: str) -> ReportSpec | None:
    """Check ``[report]`` against the resolved ``stages``; None when there is no section."""
    if section is None:
        return None
    expect(section, dict, where, "report", "a table ([report])")
    check_keys(section, REPORT_KEYS, where, lambda key: f"report.{key}")
    outputs = {stage.name: stage.outputs for stage in stages}
    models = {role: _model(section.get(role), role, outputs, where) for role in ROLES}
    if LIVE_ROLE in section:
        models[LIVE_ROLE] = _model(section[LIVE_ROLE], LIVE_ROLE, outputs, where)
    caches = expect(section.get("caches", []), lambda v: is_list_of(v, str), where,
                    "report.caches", "a list of stage names")
    for name in caches:
        _check_outputs(name, (CACHE_OUTPUT,), outputs, "report.caches", where)
    pseudo = section.get("pseudo_labels")
    if pseudo is not None:
        expect(pseudo, str, where, "report.pseudo_labels", "a stage name")
        _check_outputs(pseudo, (PSEUDO_OUTPUT,), outputs, "report.pseudo_labels", where)
    return ReportSpec(models=models, caches=tuple(caches), pseudo_labels=pseudo,
                      paper=_paper(section.get("paper"), where))


def _paper(entry, where: str) -> dict | None:
    if entry is None:
        return None
    expect(entry, _is_paper_row, where, "report.paper", "{ student_model = \"NAME\", "
           "student_baseline = AP, teacher_model = \"NAME\", teacher_baseline = AP, "
           "distilled = AP } (AP in %)", show=False)
    return dict(entry)


def _is_paper_row(entry) -> bool:
    return (isinstance(entry, dict) and set(entry) == {*PAPER_NAMES, *PAPER_FIGURES}
            and all(isinstance(entry[k], str) and entry[k] for k in PAPER_NAMES)
            and all(is_number(entry[k]) for k in PAPER_FIGURES))


def _model(entry, role: str, outputs: dict, where: str) -> ModelEntry:
    key = f"report.{role}"
    expect(entry, _is_model_entry, where, key, "{ model = \"NAME\", eval = \"STAGE\" }",
           show=False)
    _check_outputs(entry["eval"], EVAL_OUTPUTS, outputs, f"{key}.eval", where)
    return ModelEntry(model=entry["model"], eval_stage=entry["eval"])


def _is_model_entry(entry) -> bool:
    return (isinstance(entry, dict) and set(entry) == {"model", "eval"}
            and all(isinstance(v, str) and v for v in entry.values()))


def _check_outputs(stage: str, needed: tuple, outputs: dict, key: str, where: str) -> None:
    if stage not in outputs:
        raise fail(where, key, f"no stage '{stage}'")
    missing = [name for name in needed if name not in outputs[stage]]
    if missing:
        raise fail(where, key, f"stage '{stage}' needs the output '{missing[0]}'")
