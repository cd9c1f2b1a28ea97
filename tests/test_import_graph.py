"""The import graph of ``wsis_core`` and ``services`` (read with ``ast``, nothing is imported) only points down.

Every import counts, also the ones inside functions: a lazy import hides a cycle from Python, not from a reader.
The test fails on a cycle between modules and on an import that points up (``wsis_core`` importing ``services``,
``services.common`` importing ``services.api`` or ``services.workers``).
"""
from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("wsis_core", "services")

# Packages that must never be imported by the key package (the layer below must not know the one above).
FORBIDDEN = {"wsis_core": ("services",), "services.common": ("services.api", "services.workers")}

# Known edges that close cycles today, left out of the cycle check so that any NEW cycle fails. Empty since the
# layered services (issue 21, item 3); the mechanism stays for a cycle that must be allowed while it is undone.
KNOWN_CYCLE_EDGES: set[tuple[str, str]] = set()


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    return {module_name(path, root): path for package in packages for path in sorted((root / package).rglob("*.py"))}


def cycle(graph: dict[str, set[str]], ignored: set[tuple[str, str]] = frozenset()) -> list[str] | None:
    """One import cycle of ``graph`` without the ``ignored`` edges (each module imports the next), or None."""
    kept = {source: {t for t in targets if (source, t) not in ignored} for source, targets in graph.items()}
    try:
        graphlib.TopologicalSorter(kept).prepare()
    except graphlib.CycleError as error:
        return list(reversed(error.args[1]))  # graphlib lists each node before the one it depends on
    return None


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (``from pkg import mod`` names the module, else the package)."""

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(known(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[: len(package) - node.level + 1] + [node.module or ""]).strip(".") \
                    if node.level else node.module
                targets.update(known(f"{base}.{alias.name}") if f"{base}.{alias.name}" in modules else known(base)
                               for alias in node.names)
        graph[name] = targets - {None, name}
    return graph


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(project_modules())


def test_the_graph_is_read(graph):
    assert "wsis_core.rounds" in graph and "services.workers.tasks" in graph
    assert "wsis_core.io" in graph["wsis_core.rounds"]
    assert "services.common.models" in graph["services.common.jobs"]


def test_the_worker_app_imports_no_other_worker_module(graph):
    assert not {t for t in graph["services.workers.celery_app"] if t.startswith("services.workers")}


def test_no_import_points_up(graph):
    upward = sorted(
        f"{source} imports {target}"
        for source, targets in graph.items()
        for top, banned in FORBIDDEN.items() if source == top or source.startswith(top + ".")
        for target in targets if any(target == b or target.startswith(b + ".") for b in banned)
    )
    assert not upward, "imports that point up: " + "; ".join(upward)


def test_no_cycle_between_modules(graph):
    found = cycle(graph, KNOWN_CYCLE_EDGES)
    assert found is None, "import cycle: " + " -> ".join(found)


def test_known_cycle_edges_still_exist(graph):
    """An allowlisted edge that is gone must leave the list, so that it cannot come back unnoticed."""
    gone = sorted(f"{s} -> {t}" for s, t in KNOWN_CYCLE_EDGES if t not in graph.get(s, ()))
    assert not gone, "remove from KNOWN_CYCLE_EDGES: " + "; ".join(gone)


def test_the_check_finds_a_lazy_and_a_relative_cycle(tmp_path):
    """The check itself, on a made-up package: a lazy import and a relative one close a cycle; a third module that
    only imports is no part of it."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "first.py").write_text("def run():\n    from pkg import second\n")
    (package / "second.py").write_text("from .first import run\n")
    (package / "third.py").write_text("import pkg.second\n")
    graph = import_graph(project_modules(tmp_path, ("pkg",)))
    assert graph["pkg.third"] == {"pkg.second"}
    assert set(cycle(graph)) == {"pkg.first", "pkg.second"}
    assert cycle(graph, {("pkg.first", "pkg.second")}) is None
