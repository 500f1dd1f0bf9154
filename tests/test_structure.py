"""Limits on the package's shape, read from the source with ast: no function over 60 lines,
no import cycle among src/cnnlab modules (imports inside
functions count), Hydra imported by at most two modules (cli.py and hydra_app.py),
arguments parsed in cli.py alone, and the temp-then-rename write in files.py alone."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "cnnlab"
# A module's length is a signal, not a gate (benchmarks/sizes.py prints it): a module holds
# one concern whatever its length, rather than code moved to odd homes to pass a count.
FUNCTION_LINES = 60


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def relative(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def ids(paths: list[Path]) -> list[str]:
    return [relative(path) for path in paths]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, names: set[str]) -> set[str]:
    """The cnnlab modules `path` imports anywhere in it (inside functions too)."""
    here = module_name(path).split(".")
    if path.name != "__init__.py":
        here = here[:-1]  # the package a relative import starts from
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in names:  # cnnlab.data.load -> cnnlab.data
                target = target.rpartition(".")[0]
            if target and target != "cnnlab":  # the package itself: its parent, no edge
                found.add(target)
    return found - {module_name(path)}


def import_graph() -> dict[str, set[str]]:
    names = {module_name(p) for p in modules()}
    return {module_name(p): imported(p, names) for p in modules()}


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


@pytest.mark.parametrize("path", modules(), ids=ids(modules()))
def test_no_function_is_over_60_lines(path):
    long = [
        f"{node.name} (line {node.lineno}): {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > FUNCTION_LINES
    ]
    assert not long


def test_arguments_are_parsed_in_cli_alone():
    """cli.py parses every command's arguments (design.md): no other module builds a
    parser, so a flag and its help live in one place. Its length is a signal (sizes.py)."""
    parsing = [
        relative(path)
        for path in modules()
        if "argparse" in path.read_text(encoding="utf-8") and path.name != "cli.py"
    ]
    assert not parsing


def test_the_import_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "cnnlab.hydra_app" in graph["cnnlab.cli"]
    # checks imports stack inside check_fits (stack's estimate is only needed for seeds > 1)
    assert "cnnlab.stack" in graph["cnnlab.checks"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_import_cycle_among_the_modules():
    assert not [sorted(c) for c in cycles(import_graph())]


def test_hydra_is_imported_by_cli_and_hydra_app_at_most():
    importers = set()
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(name == "hydra" or name.startswith("hydra.") for name in names):
                importers.add(relative(path))
    assert importers <= {"cli.py", "hydra_app.py"} and len(importers) <= 2, importers


def test_only_files_py_renames():
    renaming = [
        relative(path)
        for path in modules()
        if ("os.replace" in (text := path.read_text(encoding="utf-8")) or ".rename(" in text)
        and path.name != "files.py"
    ]
    assert not renaming
