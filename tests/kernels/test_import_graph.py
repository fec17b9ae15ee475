"""The layering rules of the package, read from the source: kernels form a DAG, nodes never import
each other's internals."""
from __future__ import annotations

import ast
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[2]


def local_imports(package: str) -> dict[str, set[str]]:
    """``module -> modules of the same package it imports`` (relative imports, as the pack uses)."""
    folder = PACK_ROOT / package
    names = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
    graph: dict[str, set[str]] = {}
    for name in sorted(names):
        found: set[str] = set()
        for node in ast.walk(ast.parse((folder / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    found.add(node.module.split(".")[0])
                else:  # from . import a, b
                    found.update(alias.name for alias in node.names)
        graph[name] = found & names
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A list of modules forming an import cycle, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for dep in sorted(graph[m]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_find_cycle_detects_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_kernel_modules_form_a_dag():
    graph = local_imports("kernels")
    assert len(graph) >= 5
    assert find_cycle(graph) is None, f"import cycle among kernels/: {' -> '.join(find_cycle(graph))}"


def test_node_modules_form_a_dag():
    graph = local_imports("nodes")
    assert find_cycle(graph) is None, f"import cycle among nodes/: {' -> '.join(find_cycle(graph))}"
