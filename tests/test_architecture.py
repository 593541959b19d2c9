"""The shape of the runtime package (docs/architecture.md): modules of one job each (no module
over 500 lines), no import cycle between modules, and imports between its layers going one way
only (the domain imports no other layer; nothing imports the Airflow adapters but the plugin,
the DAG file and the factory's own modules)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.unit

PACKAGE = ROOT / "plugins" / "powerx_upgrade"
NAME = "powerx_upgrade"
MAX_LINES = 500

LAYERS = {
    "domain": set(),
    "security": {"domain"},
    "ledger": {"domain"},
    "rollout": {"domain", "ledger", "security", "reporting", "config"},
    "reporting": {"domain", "ledger", "config"},
    "orchestration": {"domain", "ledger", "rollout", "security", "reporting", "config"},
}
"""Which sibling packages each layer may import (the others are free to import these)."""


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def imported(name: str, path: Path, *, top_level_only: bool) -> set[str]:
    """The package's modules that `name` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith(NAME)}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if not base.startswith(NAME):
                continue
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    known = {n for n, _ in modules()}
    return {m for m in found if m in known and m != name}


def test_no_module_of_the_package_is_over_500_lines():
    long = {
        str(path.relative_to(ROOT)): n
        for _, path in modules()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines (split them by concept): {long}"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_modules():
    graph = {name: imported(name, path, top_level_only=True) for name, path in modules()}
    # a package's __init__ importing its own modules is how packages re-export: not a cycle
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(f"{m}.")}
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph) or [])}"


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_layers_import_one_way_only():
    wrong = []
    for name, path in modules():
        own = layer(name)
        if own not in LAYERS:
            continue
        for target in imported(name, path, top_level_only=False):
            other = layer(target)
            if other != own and other is not None and other not in LAYERS[own]:
                wrong.append(f"{name} imports {target}")
    assert not wrong, "imports against the layering (docs/architecture.md):\n" + "\n".join(wrong)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_orchestration_functions_only_adapt_so_they_are_short():
    """An adapter turns Airflow's context into one rollout call and back: about 30 lines at most
    (32 allows a signature that wraps and a docstring)."""
    long = []
    for path in (PACKAGE / "orchestration").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > 32:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length})")
    assert not long, "functions in orchestration/ over about 30 lines:\n" + "\n".join(long)
