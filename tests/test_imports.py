"""The package's import graph: no circles, and no import that runs back up a floor.

Every ``import`` in ``actorchat/`` counts, function-local ones included (a
function-local import is how a circle hides). The floors are the
architecture in the README, bottom up: a module imports from its own floor
or below, never above.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "actorchat"

#: Bottom up. A top-level module or subpackage of ``actorchat`` per entry.
FLOORS: list[set[str]] = [
    {"errors", "_version", "_gevent", "_records", "_metrics", "_validate", "_redact"},
    {"_events", "stores", "config"},  # what happened; where it is kept; settings
    {"_bus", "_export", "providers"},  # how events travel; where replies come from
    {"actors"},  # the actor core
    {"cluster"},  # many processes as one system: membership, placement
    {"_system", "_default"},  # the wiring and the Python API
    {"server", "testing", "_remote", "_cli", "__init__", "__main__"},  # the front ends
]
FLOOR = {name: i for i, names in enumerate(FLOORS) for name in names}


def _unit(module: str) -> str:
    """``actorchat.stores._sqlite`` -> ``stores``; ``actorchat`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_of(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("actorchat"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            if name.startswith("actorchat"):
                # "from actorchat.x import y" may name a submodule y
                for alias in node.names:
                    candidate = f"{name}.{alias.name}"
                    out.add(candidate if candidate in MODULES else name)
    return out


MODULES = {_module_of(p) for p in ROOT.rglob("*.py")}


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in ROOT.rglob("*.py"):
        module = _module_of(path)
        graph[module] = {m for m in _imports(path, module) if m in MODULES and m != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _package_init_edges(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Without a package's ``__init__`` importing its own modules to re-export them.

    That edge runs down, into the package; a module importing its own
    package's ``__init__`` (the other way) still counts.
    """
    return {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph.items()}


def test_no_import_circles() -> None:
    graph = _graph()
    assert len(graph) > 40
    assert _cycles(_package_init_edges(graph)) == []


def test_no_import_runs_back_up_a_floor() -> None:
    graph = _graph()
    assert set(FLOOR) >= {_unit(m) for m in graph}, "every module has a floor"
    upward = sorted(
        f"{m} (floor {FLOOR[_unit(m)]}) imports {d} (floor {FLOOR[_unit(d)]})"
        for m, deps in graph.items()
        for d in deps
        if FLOOR[_unit(d)] > FLOOR[_unit(m)]
    )
    assert upward == []


def test_the_checks_see_a_circle_and_an_upward_import() -> None:
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    assert FLOOR["actors"] > FLOOR["stores"] and FLOOR["server"] > FLOOR["_system"]
