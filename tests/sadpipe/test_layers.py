"""Dependencies point one way: no import cycles among the project's modules (imports inside
functions count: they only hide a cycle), and the model code imports nothing above it."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("sadpipe", "shards", "cuda_ops")
# modeling builds networks and their maths; what reads or writes files of models, trains,
# runs pipelines or parses command lines sits above it
ABOVE_MODELING = ("sadpipe.checkpoint", "sadpipe.convert", "sadpipe.engine", "sadpipe.pipeline",
                  "sadpipe.commands", "sadpipe.cli")


def module_files() -> dict[str, Path]:
    files = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imported_names(name: str, path: Path) -> set[str]:
    """Every absolute module name an import statement of the file names (anywhere in it)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> project modules it imports, with the packages above them (importing
    ``a.b.c`` runs ``a.b``'s ``__init__``), except its own packages."""
    files = module_files()
    graph = {}
    for name, path in files.items():
        deps = set()
        for target in imported_names(name, path):
            while target and target not in files:
                target = target.rpartition(".")[0]
            while target and target != name and not name.startswith(target + "."):
                deps.add(target)
                target = target.rpartition(".")[0]
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_modeling_imports_nothing_above_it():
    graph = import_graph()
    wrong = {name: sorted(d for d in deps if d.startswith(ABOVE_MODELING))
             for name, deps in graph.items() if name.startswith("sadpipe.modeling")}
    assert {name: deps for name, deps in wrong.items() if deps} == {}


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set(), "c": {"c"}}, []),
    ({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}, [["a", "b"], ["c", "d"]]),
])
def test_cycle_finder_on_hand_made_graphs(graph, expected):
    assert sorted(cycles(graph)) == expected


def test_function_level_imports_count(tmp_path):
    """An import inside a function is an edge like any other (that is how the runner -> report
    -> estimate -> runner cycle hid)."""
    path = tmp_path / "mod.py"
    path.write_text("def f():\n    from sadpipe.pipeline.runner import x\n    from . import y\n")
    assert imported_names("sadpipe.pipeline.report", path) == {
        "sadpipe.pipeline.runner", "sadpipe.pipeline.runner.x", "sadpipe.pipeline", "sadpipe.pipeline.y"}
