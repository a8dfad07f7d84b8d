"""The rules of docs/architecture.md ("Rules the tests enforce"), read from the source with `ast`.

- The top-level folders are floors, and nothing imports upward or sideways:
  jobs/ (the core) < read/ (the read side) < ship/ (exports) < worker/ and
  web/ (neither imports the other) < tools/ (the CLI, bench and local farm).
  Every import counts, inside functions too; streamlit only in web/ and tools/.
- No import cycles among the project's modules, counting
  the imports a module runs when it is imported: module-level ones, including
  those under a module-level `if`/`try`, but not `if TYPE_CHECKING:` blocks nor
  imports inside functions (those run later, once every module is loaded);
  and none either when imports inside functions are counted too, so no cycle
  hides behind a late import.
- No module over MAX_LINES lines unless its docstring has a line saying why,
  starting with "Over 600 lines:".
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The floors, lowest first: a package imports only from floors below its own.
FLOORS = {"jobs": 0, "read": 1, "ship": 2, "worker": 3, "web": 3, "tools": 4}
PACKAGES = tuple(FLOORS)
STREAMLIT_FLOORS = ("web", "tools")
MAX_LINES = 600
LONG_MODULE_MARK = "Over 600 lines:"
# Over the limit when this test was written, each being split or shortened by
# its owner; remove an entry once its module is under MAX_LINES (or says why).
LONG_MODULES_BEING_SPLIT: set[str] = set()  # none left: every module is under 600 lines


@dataclass(frozen=True)
class Module:
    name: str  # dotted: read.status
    path: Path
    tree: ast.Module


def project_modules() -> dict[str, Module]:
    """Every module of the packages; Alembic's migration scripts are loaded by
    path, never imported, so they are left out."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if relative.parts[:2] == ("jobs", "migrations"):
                continue
            parts = list(relative.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = Module(".".join(parts), path, ast.parse(path.read_text()))
    return out


def import_time_nodes(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(node.test):
                yield from import_time_nodes(node.body)
                yield from import_time_nodes(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from import_time_nodes(block)
            for handler in node.handlers:
                yield from import_time_nodes(handler.body)


def all_import_nodes(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def import_base(module: Module, node: ast.ImportFrom) -> str:
    """The package a `from … import` reads from, relative imports resolved."""
    if not node.level:
        return node.module or ""
    package = module.name.split(".")
    if module.path.name != "__init__.py":
        package.pop()
    package = package[: len(package) - (node.level - 1)]
    return ".".join([*package, *([node.module] if node.module else [])])


def imported_names(module: Module, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Dotted names an import statement reads from."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    return [import_base(module, node)]


def resolve(name: str, modules: dict[str, Module]) -> str | None:
    """The project module that `name` is or lives in."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imported_modules(
    module: Module, node: ast.Import | ast.ImportFrom, modules: dict[str, Module]
) -> set[str]:
    """The project modules an import statement loads: `from a.b import c` is the
    module a.b.c when there is one, else a.b. A package's `__init__` that runs on
    the way to a submodule is not counted: siblings importing each other through
    their package (`from jobs.formats import text`) is the ordinary way."""
    if isinstance(node, ast.Import):
        found = {resolve(alias.name, modules) for alias in node.names}
    else:
        base = import_base(module, node)
        found = {
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else resolve(base, modules)
            for alias in node.names
        }
    return {name for name in found if name is not None} - {module.name}


def import_graph(modules: dict[str, Module]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module in modules.values():
        graph[module.name] = set()
        for node in import_time_nodes(module.tree.body):
            graph[module.name] |= imported_modules(module, node, modules)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


# --- the rules ---------------------------------------------------------------------


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    modules = project_modules()
    graph = import_graph(modules)
    assert "jobs.db" in graph["jobs.lifecycle"]  # the graph sees the imports at all
    found = cycles(graph)
    described = [
        " ; ".join(f"{m} -> {', '.join(sorted(graph[m] & set(c)))}" for m in c) for c in found
    ]
    assert not found, f"import cycles: {described}"


def test_no_cycle_hides_inside_a_function() -> None:
    """An import moved into a function still ties two modules together: counting
    every import, wherever it sits, still finds no cycle."""
    modules = project_modules()
    graph: dict[str, set[str]] = {}
    for module in modules.values():
        graph[module.name] = set()
        for node in all_import_nodes(module.tree):
            graph[module.name] |= imported_modules(module, node, modules)
    assert "ship.export" in graph["tools.cli.ship"]  # imported inside a command
    found = cycles(graph)
    assert not found, f"import cycles through imports inside functions: {found}"


def upward_imports(modules: dict[str, Module]) -> list[str]:
    """Imports, wherever they sit, from a floor not below the importer's own."""
    wrong = []
    for module in modules.values():
        package = module.name.split(".")[0]
        for node in all_import_nodes(module.tree):
            for name in imported_names(module, node):
                top = name.split(".")[0]
                if top == package:
                    continue
                upward = top in FLOORS and FLOORS[top] >= FLOORS[package]
                if upward or (top == "streamlit" and package not in STREAMLIT_FLOORS):
                    wrong.append(f"{module.path.relative_to(ROOT)}:{node.lineno} imports {name}")
    return wrong


def test_no_floor_imports_upward_or_sideways() -> None:
    modules = project_modules()
    assert {m.split(".")[0] for m in modules} == set(FLOORS)  # every folder is a floor
    assert not upward_imports(modules), upward_imports(modules)


def test_the_floor_check_sees_an_upward_import() -> None:
    def module(name: str, source: str) -> Module:
        return Module(name, ROOT / (name.replace(".", "/") + ".py"), ast.parse(source))

    modules = {
        "jobs.db": module("jobs.db", "def f():\n    from web.ui import x\n"),
        "worker.main": module("worker.main", "import web.ui\nimport jobs.db\n"),
        "read.runs": module("read.runs", "import streamlit as st\n"),
        "tools.cli": module("tools.cli", "import streamlit, worker.main, web.ui\n"),
    }
    found = upward_imports(modules)
    assert [line.split(" imports ")[1] for line in found] == ["web.ui", "web.ui", "streamlit"]


def test_no_module_is_over_600_lines_without_saying_why() -> None:
    too_long = []
    for module in project_modules().values():
        relative = str(module.path.relative_to(ROOT))
        lines = len(module.path.read_text().splitlines())
        docstring = ast.get_docstring(module.tree) or ""
        says_why = any(line.startswith(LONG_MODULE_MARK) for line in docstring.splitlines())
        if lines > MAX_LINES and not says_why and relative not in LONG_MODULES_BEING_SPLIT:
            too_long.append(f"{relative}: {lines} lines")
    assert not too_long, (
        f"split these modules, or start a line of the docstring with {LONG_MODULE_MARK!r} "
        f"and the reason: {too_long}"
    )


# Where the environment may be read outside jobs/settings.py: the tools (their
# flags and the processes they start), and the spawned horse reading the job its
# worker handed over in the environment (rq's spawn protocol, never a setting).
ENV_READERS = {"jobs.settings", "worker.horse"}
TOOLS = ("tools.",)


def environment_reads(tree: ast.Module) -> list[int]:
    """Lines that read os.environ / os.getenv (a write, `os.environ[k] = v`, hands
    a value to a child and is not a read)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) in (
            "os.environ.get", "os.getenv", "os.environ.items", "os.environ.copy",
        ):  # fmt: skip
            lines.append(node.lineno)
        elif (isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load)
              and ast.unparse(node.value) == "os.environ"):  # fmt: skip
            lines.append(node.lineno)
    return lines


def test_the_environment_is_read_in_jobs_settings_only() -> None:
    found = {
        name: lines
        for name, module in project_modules().items()
        if name not in ENV_READERS and not name.startswith(TOOLS)
        and (lines := environment_reads(module.tree))
    }  # fmt: skip
    # The stage child inherits the worker's environment minus Redis's secrets.
    assert found.pop("worker.stage_job", None) is not None
    assert not found, f"read the environment through jobs.settings instead: {found}"
    assert environment_reads(ast.parse("import os\nos.environ.get('X')")) == [2]
