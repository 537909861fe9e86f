"""The code stays readable as it grows: no function longer than a screen and a half, no import circle, and
dataset code that needs nothing of the learner (docs/architecture.md, "Data walk")."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 80
SHORT_TREES = ("service", "training", "scripts", "clients/python", "loadtests")
PENDING: set[str] = set()  # files allowed a longer function while a change lands in them
PACKAGES = {"service": ROOT / "service", "training": ROOT / "training"}
PACKAGES["qipo_client"] = ROOT / "clients" / "python" / "qipo_client"


def python_files(tree: str) -> list[Path]:
    return sorted(p for p in (ROOT / tree).rglob("*.py") if ".egg-info" not in str(p))


def test_no_function_is_longer_than_80_lines() -> None:
    long = []
    for tree in SHORT_TREES:
        for path in python_files(tree):
            rel = str(path.relative_to(ROOT))
            if rel in PENDING:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        long.append(f"{rel}:{node.lineno} {node.name} ({lines} lines)")
    assert long == [], f"split these into functions that each do one job: {long}"


def modules() -> dict[str, Path]:
    out = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = (package, *path.relative_to(folder).with_suffix("").parts)
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported(path: Path, known: dict[str, Path]) -> set[str]:
    """The repository modules `path` imports, at the top or inside functions (`from a import b` names the
    submodule a.b when b is one, else a)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in known else node.module)
    return {name for name in out if name in known}


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(path, known) - {name} for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle() -> None:
    assert cycles(import_graph()) == []


def test_cycles_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_dataset_code_imports_nothing_of_the_learner() -> None:
    """Making and loading data needs gymnasium, Minari and the artifact hash, never the trainer's modules."""
    graph = import_graph()
    wrong = {
        name: sorted(m for m in deps if m.startswith("training") and not m.startswith("training.data"))
        for name, deps in graph.items()
        if name.startswith("training.data")
    }
    assert {k: v for k, v in wrong.items() if v} == {}
