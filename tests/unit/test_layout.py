"""The package layout holds: no import cycles inside ``shared/``, and each part imports only the parts
below it (docs/architecture.md, "Packages"). Read with the standard library's ``ast``: every import
counts, including those inside functions (lazy imports still form cycles)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What each part of shared/ may import (besides itself). A part is a package (core, adapters, handlers,
# cli, http) or a top-level module. The same table is in docs/architecture.md.
MAY_IMPORT = {
    "core": {"errors"},
    "errors": set(),
    "redact": set(),
    "version": set(),
    "shared": {"version"},  # shared/__init__.py: __version__
    "config": {"core", "errors"},
    "adapters": {"core", "config", "errors"},
    "telemetry": {"core"},
    "services": {"adapters", "config", "core", "errors"},
    "handlers": {"adapters", "core", "errors", "telemetry"},
    "http": {"core", "errors", "handlers", "services", "version"},
    "cli": {"core", "config", "errors", "handlers", "http", "redact", "services", "version"},
    "entrypoints": {"handlers", "http", "redact", "services", "telemetry"},
    "__main__": {"cli"},
}
LONG_FILE = 550  # lines; a longer module says in its docstring why it is one unit


def modules(package_dir: Path) -> dict[str, tuple[Path, bool]]:
    """{dotted name: (path, is a package __init__)} of every module under ``package_dir``."""
    found = {}
    for path in package_dir.rglob("*.py"):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _targets(module: str, is_package: bool, node: ast.AST, known: dict) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in known]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    out = []
    for alias in node.names:
        submodule = f"{target}.{alias.name}"
        out.append(submodule if submodule in known else target)  # `from pkg import module` names the module
    return [t for t in out if t in known]


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """{module: modules of the same package it imports}, function-level imports included."""
    known = modules(package_dir)
    graph = {}
    for name, (path, is_package) in known.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges.update(t for t in _targets(name, is_package, node, known) if t != name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
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


def part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(ROOT / "shared")


def test_no_import_cycles_in_shared(graph):
    assert cycles(graph) == []


def test_core_imports_nothing_outside_core_and_errors(graph):
    outside = {m: sorted(d for d in deps if part(d) not in ("core", "errors"))
               for m, deps in graph.items() if part(m) == "core"}
    assert {m: d for m, d in outside.items() if d} == {}
    for path in (ROOT / "shared" / "core").rglob("*.py"):  # nor Azure, nor the environment
        source = path.read_text(encoding="utf-8")
        imported = {n.module if isinstance(n, ast.ImportFrom) else a.name
                    for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.Import, ast.ImportFrom))
                    for a in (n.names if isinstance(n, ast.Import) else [n])}
        assert not {m for m in imported if m and m.split(".")[0] == "azure"}, path
        assert "os.environ" not in source and "getenv" not in source, path


def test_every_part_imports_only_the_parts_it_may(graph):
    wrong = sorted(f"{m} imports {d}" for m, deps in graph.items() for d in deps
                   if part(d) != part(m) and part(d) not in MAY_IMPORT.get(part(m), set()))
    assert wrong == []
    assert {part(m) for m in graph} <= set(MAY_IMPORT) | {"shared"}, "a new part of shared/ needs a row in MAY_IMPORT"


def test_the_checker_sees_lazy_and_relative_import_cycles(tmp_path):
    """The checks above can fail: a cycle made of a function-level import and a relative one is found."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from .sub import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from ..a import thing\n")
    (package / "c.py").write_text("from pkg import a\n")
    graph = import_graph(package)
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.a"} and graph["pkg.c"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.sub.b"]]


def test_long_modules_say_why_they_are_one_unit():
    long = []
    for path in sorted((ROOT / "shared").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > LONG_FILE and "one unit" not in (ast.get_docstring(ast.parse(text)) or "").lower():
            long.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
    assert long == []
