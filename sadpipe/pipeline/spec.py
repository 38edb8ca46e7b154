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

    [report]                         # see sadpipe.pipeline.report

References (``sadpipe.pipeline.references``): ``${workdir}``, ``${pipeline_dir}`` (the folder
of the pipeline file), ``${zoo_dir}`` (the model zoo, :mod:`sadpipe.zoo`), ``${data.KEY}``,
``${vars.KEY}``, ``${STAGE.OUTPUT}`` of an earlier stage or of the stage itself; ``$$`` is a
literal ``$``. Relative paths in ``inputs``, ``outputs``, ``clean`` and ``given`` are taken
from the current folder. Nothing in the file is executed.
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from sadpipe.config import parse_value, set_value
from sadpipe.errors import UserError
from sadpipe.pipeline.data import DATA_STAGE, ZOO_REFERENCE, DataError, data_stage, data_values, with_defaults
from sadpipe.pipeline.references import BadReference, as_text, substitute
from sadpipe.pipeline.report_spec import ReportSpec, parse_report
from sadpipe.pipeline.stage import DEFAULT_NPROC, Stage
from sadpipe.zoo import ZOO_DIR

SECTIONS = ("pipeline", "data", "vars", "stages", "report")
STAGE_KEYS = ("name", "command", "args", "inputs", "outputs", "resume", "clean", "nproc", "given")
NOT_STAGE_COMMANDS = ("run", "demo")  # a pipeline does not start pipelines
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
    raw = _read_toml(path)
    name, description = _header(raw, path)
    source, settings, variables = _settings(raw, where, overrides)
    workdir = Path(os.path.abspath(workdir or Path(DEFAULT_WORK_ROOT) / name))
    try:
        first = data_stage(source, settings, workdir)
    except DataError as err:
        raise UserError(f"{where}: {err}") from None
    try:
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
                    report=parse_report(raw.get("report"), stages, where=where))


# ---- file level

def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: pipeline file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, expected a pipeline file (.toml)") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid TOML ({err})") from None


def _header(raw: dict, path: Path) -> tuple[str, str]:
    """(name, description) from ``[pipeline]``; also refuses unknown sections."""
    unknown = [key for key in raw if key not in SECTIONS]
    if unknown:
        raise UserError(f"{path}: {unknown[0]}: unknown section (known: {', '.join(SECTIONS)})")
    header = _table(raw, "pipeline", str(path))
    return (_string(header.get("name", path.stem), "pipeline.name", str(path)),
            _string(header.get("description", ""), "pipeline.description", str(path)))


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
    if key not in raw:
        if required:
            raise UserError(f"{where}: [{key}]: missing section")
        return {}
    if not isinstance(raw[key], dict):
        raise UserError(f"{where}: {key}: must be a table ([{key}])")
    return raw[key]


def _vars(raw: dict, where: str) -> dict:
    variables = dict(_table(raw, "vars", where))
    for key, value in variables.items():
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(item, VAR_SCALARS) for item in items):
            raise UserError(f"{where}: vars.{key}: must be a string, number or boolean, or a "
                            "list of them")
    return variables


def _apply_overrides(settings: dict, overrides: tuple[str, ...]) -> None:
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or key.split(".")[0] not in settings:
            raise UserError(f"--set {item}: expected data.KEY=VALUE or vars.KEY=VALUE")
        set_value(settings, key, parse_value(text.strip()), source="--set")


def _stage_tables(raw: dict, where: str) -> list[dict]:
    tables = raw.get("stages", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise UserError(f"{where}: stages: must be an array of tables ([[stages]])")
    seen = {DATA_STAGE}
    for index, table in enumerate(tables):
        name = table.get("name")
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise UserError(f"{where}: stages[{index}].name: must be lower-case letters, digits "
                            f"and _, starting with a letter; got {name!r}")
        if name in seen:
            why = "is the data stage's name" if name == DATA_STAGE else "is used twice"
            raise UserError(f"{where}: stages[{index}].name: '{name}' {why}")
        seen.add(name)
    return tables


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
        return UserError(f"{self.where}: {self.key(field)}: {message}")

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
    unknown = [k for k in table if k not in STAGE_KEYS]
    if unknown:
        raise ctx.error(unknown[0], f"unknown key (known: {', '.join(STAGE_KEYS)})")
    command = table.get("command")
    if not isinstance(command, str) or command in NOT_STAGE_COMMANDS or command not in _commands():
        allowed = [c for c in _commands() if c not in NOT_STAGE_COMMANDS]
        raise ctx.error("command", f"must be a sadpipe command ({', '.join(allowed)}); "
                                   f"got {command!r}")
    outputs_raw = _string_table(table, "outputs", ctx, required=True)
    given = _given(table, outputs_raw, ctx)
    outputs = {key: _path(text, "outputs", ctx) for key, text in (given or outputs_raw).items()}
    ctx.values.update({f"{table['name']}.{k}": str(p) for k, p in outputs.items()})
    return Stage(
        name=table["name"], command=command,
        args=tuple(ctx.substitute(a, "args") for a in _strings(table, "args", ctx)),
        inputs=tuple(_path(t, "inputs", ctx) for t in _strings(table, "inputs", ctx)),
        outputs=outputs,
        resume_args=tuple(ctx.substitute(a, "resume") for a in _strings(table, "resume", ctx)),
        clean=tuple(_inside(_path(t, "clean", ctx), workdir, ctx)
                    for t in _strings(table, "clean", ctx)),
        nproc=_nproc(table.get("nproc", DEFAULT_NPROC), ctx),
        given=given is not None,
    )


def _given(table: dict, outputs: dict, ctx: _Context) -> dict | None:
    """The given outputs when every ``given`` value resolves non-empty; else None."""
    if "given" not in table:
        return None
    given = _string_table(table, "given", ctx, required=True)
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
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ctx.error("nproc", f"must be an integer >= 1 (or a reference to one), got {value!r}")
    return value


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
    value = table.get(field, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ctx.error(field, "must be a list of strings")
    return value


def _string_table(table: dict, field: str, ctx: _Context, *, required: bool) -> dict:
    value = table.get(field)
    if value is None and not required:
        return {}
    if (not isinstance(value, dict) or not value
            or not all(isinstance(v, str) and NAME_PATTERN.fullmatch(k) for k, v in value.items())):
        raise ctx.error(field, "must be a non-empty table of NAME = \"path\" "
                               "(names: lower-case letters, digits, _)")
    return value


def _string(value, key: str, where: str) -> str:
    if not isinstance(value, str):
        raise UserError(f"{where}: {key}: must be a string, got {value!r}")
    return value


def _commands() -> list[str]:
    from sadpipe.cli import COMMANDS  # the CLI's own list: one source of truth

    return [name for name, _ in COMMANDS]
