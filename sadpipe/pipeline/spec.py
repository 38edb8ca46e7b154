"""Pipeline files: TOML that names the stages, their commands, inputs and outputs.

Layout (see ``pipelines/toy_sad.toml`` for a complete example)::

    [pipeline]
    name = "toy_sad"                 # default work folder: work/<name>
    description = "..."

    [data]                           # see sadpipe.pipeline.data
    source = "toy"                   # or "coco" with root + six paths
    seed = 0

    [vars]                           # free values, ${vars.NAME}; change with --set vars.NAME=..
    teacher_iters = 1000             # scalars, or flat lists (substituted as TOML: [700, 900])

    [[stages]]                       # run in this order
    name = "teacher"
    command = "train"                # a sadpipe command
    args = ["--config", "${pipeline_dir}/toy_teacher.toml", "--out", "${workdir}/teacher"]
    inputs = ["${pipeline_dir}/toy_teacher.toml", "${data.train_images}"]
    outputs = { model = "${workdir}/teacher/model_final.pt" }   # later: ${teacher.model}
    resume = ["--resume"]            # appended when an interrupted run is continued
    clean = ["${workdir}/teacher"]   # removed before a fresh run (inside the workdir only)
    nproc = 1                        # > 1: run under torch.distributed.run
    given = { model = "${data.teacher_checkpoint}" }  # all non-empty: not run, outputs given

    [report]                         # see sadpipe.pipeline.report; ${...} in model names

References (``sadpipe.pipeline.references``): ``${workdir}``, ``${pipeline_dir}`` (the folder
of the pipeline file), ``${zoo_dir}`` (the model zoo, :mod:`sadpipe.zoo`), ``${data.KEY}``,
``${vars.KEY}``, ``${STAGE.OUTPUT}`` of an earlier stage or of the stage itself; ``$$`` is a
literal ``$``. Relative paths in ``inputs``, ``outputs``, ``clean`` and ``given`` are taken
from the current folder. Nothing in the file is executed.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from sadpipe.commands import COMMANDS
from sadpipe.config import parse_value, set_value
from sadpipe.errors import UserError
from sadpipe.fileio import load_toml_file
from sadpipe.pipeline.data import DATA_STAGE, ZOO_REFERENCE, DataError, data_stage, data_values, with_defaults
from sadpipe.pipeline.references import BadReference, as_text, substitute
from sadpipe.pipeline.report_spec import ReportSpec, parse_report
from sadpipe.pipeline.stage import DEFAULT_NPROC, Stage
from sadpipe.validation import check_keys, expect, fail, is_int, is_list_of
from sadpipe.zoo import ZOO_DIR

SECTIONS = ("pipeline", "data", "vars", "stages", "report")
STAGE_KEYS = ("name", "command", "args", "inputs", "outputs", "resume", "clean", "nproc", "given")
NOT_STAGE_COMMANDS = ("run", "demo")  # a pipeline does not start pipelines
STAGE_COMMANDS = tuple(name for name, _ in COMMANDS if name not in NOT_STAGE_COMMANDS)
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
VAR_SCALARS = (str, int, float, bool)
DEFAULT_WORK_ROOT = "work"


@dataclass(frozen=True)
class Pipeline:
    """A loaded pipeline: its stages in order (``data`` first), resolved for one workdir."""

    name: str
    description: str
    path: Path
    workdir: Path
    stages: tuple[Stage, ...]
    report: ReportSpec | None

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def index(self, name: str, *, option: str) -> int:
        """Position of stage ``name``; ``UserError`` naming ``option`` if there is none."""
        names = [stage.name for stage in self.stages]
        if name not in names:
            raise UserError(f"{option}: no stage '{name}' in {self.path} "
                            f"(stages: {', '.join(names)})")
        return names.index(name)


def load_pipeline(path, *, workdir=None, overrides: tuple[str, ...] = ()) -> Pipeline:
    """Read, check and resolve a pipeline file.

    Args:
        path: the TOML file.
        workdir: where the stages write (default ``work/<pipeline name>``); made absolute.
        overrides: ``KEY=VALUE`` items for ``data.*`` and ``vars.*`` (TOML values; a bare word
            is a string), as given to ``--set``.

    Every problem is a one-line ``UserError`` naming the file (or ``--set``) and the key.
    """
    path = Path(path)
    where = str(path)
    raw = load_toml_file(path, "pipeline file")
    name, description = _header(raw, path)
    source, settings, variables = _settings(raw, where, overrides)
    workdir = Path(os.path.abspath(workdir or Path(DEFAULT_WORK_ROOT) / name))
    try:
        first = data_stage(source, settings, workdir)
        data_namespace = data_values(settings)
    except DataError as err:
        raise UserError(f"{where}: {err}") from None
    values = {"workdir": str(workdir), "pipeline_dir": os.path.abspath(path.parent),
              ZOO_REFERENCE: str(ZOO_DIR),
              **{key: as_text(v) for key, v in data_namespace.items()},
              **{f"vars.{key}": as_text(v) for key, v in variables.items()},
              **{f"{DATA_STAGE}.{key}": str(p) for key, p in first.outputs.items()}}
    stages = [first]
    tables = _stage_tables(raw, where)
    for index, table in enumerate(tables):
        context = _Context(where, index, table, [t["name"] for t in tables], values)
        stages.append(_resolve_stage(table, context, workdir))  # adds its outputs to values
    return Pipeline(name=name, description=description, path=path, workdir=workdir,
                    stages=tuple(stages),
                    report=parse_report(_report_names(raw.get("report"), values, where), stages,
                                        where=where))


# ---- file level

def _report_names(section, values: dict, where: str):
    """``[report]`` with the references in its models' names substituted (e.g. a student
    named after ``${vars.student_arch}``); anything else is left to ``parse_report``."""
    if not isinstance(section, dict):
        return section
    out = dict(section)
    for role, entry in section.items():
        if isinstance(entry, dict) and isinstance(entry.get("model"), str):
            try:
                out[role] = {**entry, "model": substitute(entry["model"], values)}
            except BadReference as err:
                raise fail(where, f"report.{role}.model", str(err)) from None
    return out


def _header(raw: dict, path: Path) -> tuple[str, str]:
    """(name, description) from ``[pipeline]``; also refuses unknown sections."""
    where = str(path)
    check_keys(raw, SECTIONS, where, what="section")
    header = _table(raw, "pipeline", where)
    return (expect(header.get("name", path.stem), str, where, "pipeline.name", "a string"),
            expect(header.get("description", ""), str, where, "pipeline.description", "a string"))


def _settings(raw: dict, where: str, overrides: tuple[str, ...]) -> tuple[str, dict, dict]:
    """(data source, data settings, vars), with the ``--set`` overrides applied."""
    section = dict(_table(raw, "data", where, required=True))
    source = section.pop("source", None)
    try:
        settings = with_defaults(source, section)
    except DataError as err:
        raise UserError(f"{where}: {err}") from None
    variables = _vars(raw, where)
    _apply_overrides({"data": settings, "vars": variables}, overrides)
    return source, settings, variables


def _table(raw: dict, key: str, where: str, *, required: bool = False) -> dict:
    if required and key not in raw:
        raise fail(where, f"[{key}]", "missing section")
    return expect(raw.get(key, {}), dict, where, key, f"a table ([{key}])")


def _vars(raw: dict, where: str) -> dict:
    variables = dict(_table(raw, "vars", where))
    for key, value in variables.items():
        expect(value, _is_var, where, f"vars.{key}", "a string, number or boolean, or a list of them")
    return variables


def _is_var(value) -> bool:
    items = value if isinstance(value, list) else [value]
    return all(isinstance(item, VAR_SCALARS) for item in items)


def _apply_overrides(settings: dict, overrides: tuple[str, ...]) -> None:
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or key.split(".")[0] not in settings:
            raise UserError(f"--set {item}: expected data.KEY=VALUE or vars.KEY=VALUE")
        set_value(settings, key, parse_value(text.strip()), source="--set")


def _stage_tables(raw: dict, where: str) -> list[dict]:
    tables = expect(raw.get("stages", []), lambda v: is_list_of(v, dict), where, "stages",
                    "an array of tables ([[stages]])")
    seen = {DATA_STAGE}
    for index, table in enumerate(tables):
        key = f"stages[{index}].name"
        name = expect(table.get("name"), _is_name, where, key,
                      "lower-case letters, digits and _, starting with a letter")
        if name in seen:
            why = "is the data stage's name" if name == DATA_STAGE else "is used twice"
            raise fail(where, key, f"'{name}' {why}")
        seen.add(name)
    return tables


def _is_name(value) -> bool:
    return isinstance(value, str) and NAME_PATTERN.fullmatch(value) is not None


# ---- one stage

@dataclass
class _Context:
    """Where a stage table is (for messages) and the values it may refer to."""

    where: str
    index: int
    table: dict
    stage_names: list[str]
    values: dict[str, str]

    def key(self, field: str) -> str:
        return f"stages[{self.index}].{field} (stage '{self.table['name']}')"

    def error(self, field: str, message: str) -> UserError:
        return fail(self.where, self.key(field), message)

    def expect(self, value, ok, field: str, what: str):
        return expect(value, ok, self.where, self.key(field), what)

    def substitute(self, text: str, field: str) -> str:
        try:
            return substitute(text, self.values, hint=self._hint)
        except BadReference as err:
            raise self.error(field, str(err)) from None

    def _hint(self, name: str) -> str | None:
        head = name.split(".")[0]
        later = self.stage_names[self.index + 1:]
        if head in later:
            return f"${{{name}}} refers to stage '{head}', which runs later"
        outputs = sorted(k.split(".", 1)[1] for k in self.values if k.startswith(head + "."))
        if "." in name and outputs and head not in ("data", "vars"):
            return f"${{{name}}}: stage '{head}' has no output of that name " \
                   f"(outputs: {', '.join(outputs)})"
        if head in ("data", "vars"):
            return f"${{{name}}}: no such key in [{head}] (keys: {', '.join(outputs)})"
        return None


def _resolve_stage(table: dict, ctx: _Context, workdir: Path) -> Stage:
    check_keys(table, STAGE_KEYS, ctx.where, ctx.key)
    command = ctx.expect(table.get("command"), lambda c: c in STAGE_COMMANDS, "command",
                         f"a sadpipe command ({', '.join(STAGE_COMMANDS)})")
    outputs_raw = _string_table(table, "outputs", ctx)
    given = _given(table, outputs_raw, ctx)
    outputs = {key: _path(text, "outputs", ctx) for key, text in (given or outputs_raw).items()}
    ctx.values.update({f"{table['name']}.{k}": str(p) for k, p in outputs.items()})
    return Stage(
        name=table["name"], command=command, args=_texts(table, "args", ctx),
        inputs=_paths(table, "inputs", ctx), outputs=outputs,
        resume_args=_texts(table, "resume", ctx),
        clean=tuple(_inside(path, workdir, ctx) for path in _paths(table, "clean", ctx)),
        nproc=_nproc(table.get("nproc", DEFAULT_NPROC), ctx), given=given is not None)


def _given(table: dict, outputs: dict, ctx: _Context) -> dict | None:
    """The given outputs when every ``given`` value resolves non-empty; else None."""
    if "given" not in table:
        return None
    given = _string_table(table, "given", ctx)
    if set(given) != set(outputs):
        raise ctx.error("given", f"must name the same outputs as 'outputs' "
                                 f"({', '.join(sorted(outputs))})")
    resolved = {key: ctx.substitute(text, "given") for key, text in given.items()}
    filled = [key for key, text in resolved.items() if text]
    if filled and len(filled) != len(resolved):
        raise ctx.error("given", "set all of its values or none")
    return resolved if filled else None


def _nproc(value, ctx: _Context) -> int:
    if isinstance(value, str):
        text = ctx.substitute(value, "nproc")
        value = int(text) if text.isdigit() else text
    return ctx.expect(value, lambda v: is_int(v) and v >= 1, "nproc",
                      "an integer >= 1 (or a reference to one)")


def _path(text: str, field: str, ctx: _Context) -> Path:
    resolved = ctx.substitute(text, field)
    if not resolved:
        raise ctx.error(field, f"{text!r} is an empty path")
    return Path(os.path.abspath(resolved))


def _inside(path: Path, workdir: Path, ctx: _Context) -> Path:
    if path == workdir or workdir not in path.parents:
        raise ctx.error("clean", f"{path} is not inside the workdir {workdir}; only folders "
                                 "inside it are ever removed")
    return path


def _strings(table: dict, field: str, ctx: _Context) -> list[str]:
    return ctx.expect(table.get(field, []), lambda v: is_list_of(v, str), field, "a list of strings")


def _texts(table: dict, field: str, ctx: _Context) -> tuple[str, ...]:
    return tuple(ctx.substitute(text, field) for text in _strings(table, field, ctx))


def _paths(table: dict, field: str, ctx: _Context) -> tuple[Path, ...]:
    return tuple(_path(text, field, ctx) for text in _strings(table, field, ctx))


def _string_table(table: dict, field: str, ctx: _Context) -> dict:
    return ctx.expect(table.get(field), _is_path_table, field,
                      "a non-empty table of NAME = \"path\" (names: lower-case letters, digits, _)")


def _is_path_table(value) -> bool:
    return (isinstance(value, dict) and bool(value)
            and all(_is_name(k) and isinstance(v, str) for k, v in value.items()))
