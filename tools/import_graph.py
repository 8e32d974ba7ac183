"""The package's import graph, read from the code, and its circles.

    python tools/import_graph.py [PREFIX]     # e.g. sallm_jax.models

Prints each module of PREFIX (default: the whole package) with the package modules it imports,
module-level and inside functions alike, then every circle (a strongly connected group of
modules); exits 1 when there is one.
"""

from __future__ import annotations

import ast
import pathlib
import sys
from collections.abc import Iterable, Mapping

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = "sallm_jax"


def module_names(root: pathlib.Path = ROOT, package: str = PACKAGE) -> dict[str, pathlib.Path]:
    """Dotted module name -> file, for every .py file of `package` (a package's __init__.py
    is named by the package)."""
    names = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imported_modules(source: str, modules: Iterable[str], package: str = PACKAGE) -> set[str]:
    """The modules of `modules` that `source` imports anywhere (`import a.b`, `from a import b`,
    `from a.b import name`); a name that is itself a module counts as that module."""
    known = set(modules)
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith(package):
                continue
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in known else node.module)
    return found & known


def import_graph(root: pathlib.Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package modules it imports."""
    names = module_names(root, package)
    return {name: imported_modules(path.read_text(), names, package) - {name}
            for name, path in names.items()}


def circles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected groups of two or more modules (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in graph.get(node, ()):
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def main(argv: list[str]) -> int:
    prefix = argv[0] if argv else PACKAGE
    graph = import_graph()
    for name in sorted(graph):
        if name == prefix or name.startswith(prefix + "."):
            print(f"{name} -> {', '.join(sorted(graph[name])) or '(nothing)'}")
    found = circles(graph)
    for group in found:
        print("CIRCLE: " + " <-> ".join(group))
    print(f"{len(found)} circle(s) among {len(graph)} modules")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
