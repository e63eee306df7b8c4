"""The package's shape: imports point one way down the layers, no import cycle, modules of at most
600 lines, package ``__init__`` files that only say what their folder holds, and an API page that
lists every module.

The layers, top to bottom (a module may import from its own layer or a lower one)::

    4  thadcr.interfaces.*, thadcr.__main__
    3  thadcr.experiments.*
    2  thadcr.run.*
    1  thadcr.model.*  and  thadcr.data.*  (neither imports the other)
    0  thadcr, thadcr.config, thadcr.errors, thadcr.files, thadcr.numerics, thadcr.portable

Every import counts, at module level or inside a function. The checks read the source with
``ast`` and import nothing of thadcr, so they run in a second.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "thadcr"
API_PAGE = ROOT / "book" / "api.md"
MAX_LINES = 600
# the command line (and `python -m thadcr`) is a thin layer over documented functions
NOT_ON_API_PAGE = {"thadcr.__main__", "thadcr.interfaces.cli"}

# (layer, group) of each top-level folder; groups of one layer may not import each other
FOLDERS = {"interfaces": (4, "interfaces"), "experiments": (3, "experiments"), "run": (2, "run"),
           "model": (1, "model"), "data": (1, "data")}
BASICS = {"thadcr", "thadcr.config", "thadcr.errors", "thadcr.files", "thadcr.numerics", "thadcr.portable"}


@dataclass(frozen=True)
class Import:
    """One import of a thadcr module: who imports what, and where."""

    importer: str
    imported: str
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.importer} -> {self.imported} ({self.file}:{self.line})"


def module_files(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under ``package`` (a package is named by its
    ``__init__.py``)."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path], root: Path) -> list[Import]:
    """Every import of a module of the package in one file, at any depth of the syntax tree.
    ``from a import b`` is an import of ``a.b`` when ``a.b`` is a module, else of ``a``; relative
    imports are resolved against the file's package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    file = path.relative_to(root).as_posix()
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            submodules = [f"{base}.{alias.name}" for alias in node.names]
            targets = [m for m in submodules if m in modules]
            if len(targets) < len(submodules):
                targets.append(base)
        else:
            continue
        found += [Import(name, t, file, node.lineno) for t in targets if t.split(".")[0] == "thadcr"]
    return found


def import_graph(package: Path) -> tuple[dict[str, Path], list[Import]]:
    """The package's modules and every import between them."""
    modules = module_files(package)
    imports = [i for name, path in modules.items() for i in imports_of(name, path, modules, package.parent)]
    return modules, imports


def layer_of(module: str) -> tuple[int, str] | None:
    """(layer, group) of a dotted module name, or None for a module that is in no layer."""
    if module in BASICS:
        return 0, "basics"
    if module == "thadcr.__main__":
        return FOLDERS["interfaces"]
    parts = module.split(".")
    return FOLDERS.get(parts[1]) if len(parts) > 1 and parts[0] == "thadcr" else None


def layering_problems(modules: dict[str, Path], imports: list[Import]) -> list[str]:
    """Modules in no layer, and imports that go up a layer or across to the other group of one."""
    problems = [f"{m} is in no layer (add its folder or name to tests/test_layout.py)"
                for m in modules if layer_of(m) is None]
    for edge in imports:
        importer, imported = layer_of(edge.importer), layer_of(edge.imported)
        if importer is None or imported is None:
            continue
        if imported[0] > importer[0] or (imported[0] == importer[0] and imported[1] != importer[1]):
            problems.append(f"{edge}: layer {importer[0]} {importer[1]} imports layer {imported[0]} {imported[1]}")
    return problems


def strongly_connected(nodes: list[str], edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of a directed graph."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, []):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in nodes:
        if node not in index:
            visit(node)
    return components


def shortest_cycle(start: str, members: set[str], edges: dict[str, list[str]]) -> list[str]:
    """The shortest path from ``start`` back to itself inside one strongly connected component."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in edges.get(node, []):
                if nxt == start:
                    return paths[node] + [start]
                if nxt in members and nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"{start} is on no cycle")


def cycles(imports: list[Import]) -> list[str]:
    """For each group of modules that import each other in a circle: its shortest chain, then every
    import among the group with its file and line (each one is a place to break the circle)."""
    first: dict[tuple[str, str], Import] = {}
    for edge in sorted(imports, key=lambda i: i.line):
        first.setdefault((edge.importer, edge.imported), edge)
    edges: dict[str, list[str]] = {}
    for importer, imported in sorted(first):
        edges.setdefault(importer, []).append(imported)
    nodes = sorted({n for pair in first for n in pair})
    reports = []
    for component in strongly_connected(nodes, edges):
        if len(component) == 1 and (component[0], component[0]) not in first:
            continue
        chain = shortest_cycle(component[0], set(component), edges)
        inside = [str(edge) for pair, edge in sorted(first.items()) if set(pair) <= set(component)]
        heading = " -> ".join(chain)
        if len(component) > len(chain) - 1:
            heading += f" (and {len(component)} modules in all import each other in a circle: {', '.join(component)})"
        reports.append("\n".join([heading, *(f"  {edge}" for edge in inside)]))
    return reports


def line_counts(modules: dict[str, Path]) -> dict[str, int]:
    return {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in modules.items()}


def init_problems(package: Path) -> list[str]:
    """Package folders without an ``__init__.py``, without a docstring, or with anything but the
    docstring in it (the root's ``__version__`` aside): no imports, so no re-exports."""
    problems = []
    folders = sorted({p.parent for p in package.rglob("*.py") if "__pycache__" not in p.parts})
    for folder in folders:
        init = folder / "__init__.py"
        shown = init.relative_to(package.parent).as_posix()
        if not init.is_file():
            problems.append(f"{shown} is missing")
            continue
        tree = ast.parse(init.read_text(encoding="utf-8"))
        if not (ast.get_docstring(tree) or "").strip():
            problems.append(f"{shown} has no docstring (say what the folder holds)")
        body = tree.body[1:] if ast.get_docstring(tree) is not None else tree.body
        for statement in body:
            version = (folder == package and isinstance(statement, ast.Assign)
                       and [ast.unparse(t) for t in statement.targets] == ["__version__"])
            if not version:
                kind = "an import" if isinstance(statement, (ast.Import, ast.ImportFrom)) else "a statement"
                problems.append(f"{shown}:{statement.lineno} holds {kind} besides the docstring: "
                                f"{ast.unparse(statement).splitlines()[0]}")
    return problems


# --- the package ---------------------------------------------------------------------------------


def fail_with(problems: list[str], heading: str) -> None:
    """Fail with the heading and one problem a line (no repr of the list after it)."""
    if problems:
        pytest.fail(f"{heading}:\n" + "\n".join(problems), pytrace=False)


def test_no_import_cycle() -> None:
    _, imports = import_graph(PACKAGE)
    fail_with(cycles(imports), "import cycles among thadcr modules (every import counts, also inside a function)")


def test_imports_follow_the_layers() -> None:
    modules, imports = import_graph(PACKAGE)
    fail_with(layering_problems(modules, imports),
              "imports must point down the layers (interfaces 4, experiments 3, run 2, model|data 1, basics 0)")


def test_every_imported_module_exists() -> None:
    modules, imports = import_graph(PACKAGE)
    fail_with([str(i) for i in imports if i.imported not in modules], "imports of thadcr modules that do not exist")


def test_modules_are_at_most_600_lines() -> None:
    modules = module_files(PACKAGE)
    long = sorted(((n, m) for m, n in line_counts(modules).items() if n > MAX_LINES), reverse=True)
    fail_with([f"{modules[m].relative_to(ROOT).as_posix()}: {n} lines" for n, m in long],
              f"modules over {MAX_LINES} lines (split them by concept)")


def test_package_init_files_only_describe_their_folder() -> None:
    fail_with(init_problems(PACKAGE), "package __init__.py files hold a docstring and nothing to import")


def test_api_page_lists_every_module_and_no_other() -> None:
    modules = module_files(PACKAGE)
    listed = set(re.findall(r"^\.\. automodule:: (\S+)$", API_PAGE.read_text(encoding="utf-8"), flags=re.MULTILINE))
    expected = {m for m, p in modules.items() if p.name != "__init__.py"} - NOT_ON_API_PAGE
    fail_with([f"{m}: add an automodule section" for m in sorted(expected - listed)]
              + [f"{m}: documented but no such module" for m in sorted(listed - set(modules))],
              "book/api.md must list every thadcr module")


# --- the checker itself --------------------------------------------------------------------------


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "thadcr"


def test_checker_reports_a_cycle_an_upward_import_and_a_sideways_one(tmp_path: Path) -> None:
    package = write_package(tmp_path, {
        "thadcr/__init__.py": '"""Root."""\n__version__ = "0"\n',
        "thadcr/config.py": '"""Basics."""\n\n\ndef f():\n    from thadcr.run import train\n',
        "thadcr/run/__init__.py": '"""Run."""\n',
        "thadcr/run/train.py": '"""Train."""\nfrom ..model import a\n',
        "thadcr/model/__init__.py": '"""Model."""\nfrom thadcr.model.a import x\n',
        "thadcr/model/a.py": '"""A."""\nfrom . import b\nx = 1\n',
        "thadcr/model/b.py": '"""B."""\nimport thadcr.errors\n\n\ndef g():\n    import thadcr.model.a\n',
        "thadcr/model/c.py": '"""C."""\nfrom thadcr.data import d\n',
        "thadcr/data/__init__.py": '"""Data."""\n',
        "thadcr/data/d.py": '"""D."""\n',
        "thadcr/errors.py": '"""Errors."""\n',
        "thadcr/extra/__init__.py": "",
        "thadcr/extra/e.py": '"""E."""\n',
    })
    modules, imports = import_graph(package)
    assert {str(i) for i in imports} >= {
        "thadcr.config -> thadcr.run.train (thadcr/config.py:5)",
        "thadcr.run.train -> thadcr.model.a (thadcr/run/train.py:2)",
        "thadcr.model.a -> thadcr.model.b (thadcr/model/a.py:2)",
        "thadcr.model.b -> thadcr.model.a (thadcr/model/b.py:6)",
        "thadcr.model.c -> thadcr.data.d (thadcr/model/c.py:2)",
    }
    assert cycles(imports) == [
        "thadcr.model.a -> thadcr.model.b -> thadcr.model.a\n"
        "  thadcr.model.a -> thadcr.model.b (thadcr/model/a.py:2)\n"
        "  thadcr.model.b -> thadcr.model.a (thadcr/model/b.py:6)"
    ]
    problems = layering_problems(modules, imports)
    assert "thadcr.config -> thadcr.run.train (thadcr/config.py:5): layer 0 basics imports layer 2 run" in problems
    assert "thadcr.model.c -> thadcr.data.d (thadcr/model/c.py:2): layer 1 model imports layer 1 data" in problems
    assert any(p.startswith("thadcr.extra.e is in no layer") for p in problems)
    assert not any("thadcr.run.train ->" in p for p in problems)  # downward imports are fine
    assert init_problems(package) == [
        "thadcr/extra/__init__.py has no docstring (say what the folder holds)",
        "thadcr/model/__init__.py:2 holds an import besides the docstring: from thadcr.model.a import x",
    ]
    assert line_counts(modules)["thadcr.model.b"] == 6
