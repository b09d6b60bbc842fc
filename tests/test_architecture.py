"""The package's shape: no import cycles, and Kafka/Faust only in the shell.

Imports are read from the source (``ast``), at every level (a function-level import is
still a dependency), so a cycle hidden inside a function fails here too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "pipeline"

#: Third-party packages only the Kafka/Faust shell may import.
SHELL_ONLY = ("faust", "mode", "aiokafka")
#: Where the shell lives.
SHELL = ("pipeline.runtime", "pipeline.cli")


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py")) if "schemas" not in p.parts}


def _imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            # "from pipeline.x import y" may import the submodule pipeline.x.y
            out.update(f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in MODULES)
    return out


GRAPH = {n: {m for m in _imports(n, p) if m in MODULES and m != n} for n, p in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_is_read() -> None:
    # a known edge: the worker's agents use the windows
    assert "pipeline.aggregate.windows" in set().union(*(GRAPH[m] for m in GRAPH if m.startswith("pipeline.runtime")))
    assert len(MODULES) > 20


def test_no_module_import_cycle() -> None:
    assert _cycles(GRAPH) == []


def _stage(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def test_no_cycle_between_subpackages() -> None:
    """A stage may use the stages before it, never the other way round."""
    stages: dict[str, set[str]] = {}
    for m, deps in GRAPH.items():
        s = _stage(m)
        stages.setdefault(s, set()).update(_stage(d) for d in deps if _stage(d) != s)
    for deps in list(stages.values()):
        for d in deps:
            stages.setdefault(d, set())
    assert _cycles(stages) == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_kafka_and_faust_only_in_the_shell(module: str) -> None:
    if module.startswith(SHELL):
        return
    bad = sorted(m for m in _imports(module, MODULES[module]) if m.split(".")[0] in SHELL_ONLY)
    assert not bad, f"{module} imports {bad}: only {', '.join(SHELL)} may import {', '.join(SHELL_ONLY)}"
