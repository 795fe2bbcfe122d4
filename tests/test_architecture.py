"""The package's import graph has no cycles, type-checking imports included.

A cycle means two modules cannot be understood, tested or replaced one without the other; the
one this project had (the providers' base and ``upstream`` importing each other) is why the
outcome types live in ``exporter.outcome``, below both. The graph is read from the source with
``ast``, so an import made only for type checking counts as much as any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import ROOT

PACKAGE = ROOT / "exporter"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports (``from pkg import mod`` names ``pkg.mod``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            assert node.level == 0, f"{path}: relative import"
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found & modules


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    modules = set(paths)
    return {name: imports_of(path, modules) - {name} for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read_from_the_source() -> None:
    graph = import_graph()
    assert "exporter.outcome" in graph["exporter.upstream"]
    assert "exporter.upstream" in graph["exporter.providers.base"]  # a type-checking import
    # the registry finds providers by entry point, never by import
    assert "exporter.providers.crisp" not in graph["exporter.fetching.registry"]


def test_cycles_are_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]


def test_the_package_has_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen: set[str] = set()
    pending = [start]
    while pending:
        for target in graph[pending.pop()] - seen:
            seen.add(target)
            pending.append(target)
    return seen


def test_upstream_imports_no_provider() -> None:
    """HTTP is the same for every provider; what differs (error envelopes, back-off hints in the
    body) is each provider's own, handed to ``Upstream`` through its ``Provider`` hooks."""
    graph = import_graph()
    assert "exporter.envelope" in graph["exporter.upstream"]
    providers = {m for m in reachable(graph, "exporter.upstream") if m.startswith("exporter.prov")}
    assert providers == set()


def all_imports(path: Path) -> set[str]:
    """Every module ``path`` imports, the third-party ones included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            found.add(node.module)
    return found


def imports_under(package: str) -> dict[str, set[str]]:
    return {module_name(path): all_imports(path) for path in (PACKAGE / package).rglob("*.py")}


def reaching(imports: dict[str, set[str]], *prefixes: str) -> dict[str, set[str]]:
    """The modules among ``imports`` that import something under one of ``prefixes``."""
    found = {
        module: {name for name in names if name.startswith(prefixes)}
        for module, names in imports.items()
    }
    return {module: names for module, names in found.items() if names}


def test_rendering_does_no_io() -> None:
    """collect() is synchronous: rendering formats results already fetched, so nothing under
    exporter.rendering may reach the network (aiohttp, the upstream client) or the web app."""
    assert (
        reaching(imports_under("rendering"), "aiohttp", "exporter.upstream", "exporter.web") == {}
    )


def test_only_the_web_package_knows_the_web() -> None:
    """The layers point one way: the web app uses fetching, rendering and configuration, never
    the other way round (so each can be tested and benchmarked without a server)."""
    for package in ("fetching", "rendering", "configuration", "queues", "providers"):
        assert reaching(imports_under(package), "exporter.web", "aiohttp.web") == {}, package


def test_the_top_level_stays_small() -> None:
    """Modules are grouped by what they do; the top level keeps the entry points and the
    public provider interface's own modules (models, outcome, envelope, upstream)."""
    top = sorted(path.stem for path in PACKAGE.glob("*.py"))
    assert top == [
        "__init__",
        "__main__",
        "cli",
        "envelope",
        "logs",
        "models",
        "outcome",
        "redaction",
        "service",
        "upstream",
    ]
