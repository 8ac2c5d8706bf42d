"""The package's shape: no import cycles, and the demo is a leaf nothing else imports.

The import graph is read from the source with :mod:`ast` (every ``import`` statement,
including those inside functions, since a deferred import still ties two modules), so the
check does not depend on what happens to be imported at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "spectralnet_seg"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, known: set[str]) -> set[str]:
    """Package modules imported by the file at ``path`` (relative imports resolved)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # "from . import x" imports the submodule x when there is one, else the name x
            # from the package's __init__ (a dependency on everything the __init__ imports)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target:
                found.add(target)
    found.discard(name)
    return found


def import_graph(folders=(PACKAGE,)) -> dict[str, set[str]]:
    """Module -> package modules it imports, over the ``.py`` files under ``folders``."""
    files = [f for folder in folders for f in sorted((ROOT / folder).rglob("*.py"))]
    known = {_module_name(f) for f in (ROOT / PACKAGE).rglob("*.py")}
    return {_module_name(f): _imports(f, known) for f in files}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm).

    Python imports a module's parent packages before the module; that implicit step is not
    an edge here, but a module that imports a *name* from its own package's ``__init__``
    (``from . import SumKernel`` in a submodule the ``__init__`` imports) closes a cycle.
    """
    edges = {m: {t for t in targets if t in graph} for m, targets in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}, "p": {"p.d"}}
    assert cycles(graph) == [["p.a", "p.b", "p.c"]]
    graph["p.d"] = {"p"}  # a submodule using its package's namespace
    assert sorted(cycles(graph)) == [["p", "p.d"], ["p.a", "p.b", "p.c"]]


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "spectralnet_seg.kernels.spatial_color" in graph  # the parse found the modules
    assert "spectralnet_seg.kernels._base" in graph["spectralnet_seg.kernels.combined"]
    assert cycles(graph) == []


def test_the_demo_is_a_leaf_only_its_cli_command_imports():
    graph = import_graph((PACKAGE, "benchmarks", "examples"))
    importers = sorted(m for m, targets in graph.items() if "spectralnet_seg.demo" in targets)
    assert importers == ["spectralnet_seg.cli"]
