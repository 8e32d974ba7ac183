"""The package's import graph, read from the code: its circles and its upward imports.

    python tools/import_graph.py [PREFIX]     # e.g. sallm_jax.models

Prints each module of PREFIX (default: the whole package) with its layer and the package modules
it imports, module-level and inside functions alike; then every circle among modules, every
circle among folders (`folder_graph`: a folder importing one that imports it back, even where no
two modules do), every folder whose modules sit in two layers, and every upward import (a module
importing one of a higher layer, `LAYERS`); exits 1 when there is any.
"""

from __future__ import annotations

import ast
import pathlib
import sys
from collections.abc import Iterable, Mapping, Sequence

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = "sallm_jax"
# Packages whose folder is not their dotted name's path (setup.py's package_dir).
PACKAGE_DIRS = {"sallm_jax.configs": "configs"}

# The package's layers, low to high: a module may import modules of its own layer and lower ones.
# A pattern names one module, or with ".*" a package and everything in it; the longest pattern
# that matches a module decides its layer, and a module no pattern matches is in the last layer.
# Data sits below the models: batches need a model's audio-token count, which the caller passes
# (`BatchSpec.num_audio_tokens`), never a model module. The configs sit at the top with the entry
# points: they choose among what every layer offers (configs/base.py reads parallel/sharding.py's
# DEFAULT_RULES), and no library module reads them.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("sallm_jax", "sallm_jax.runtime.*", "sallm_jax.audio.*")),
    ("data", ("sallm_jax.data.*",)),
    ("models", ("sallm_jax.models.*",)),
    ("parallel", ("sallm_jax.parallel.*",)),
    ("metrics", ("sallm_jax.metrics.*",)),
    ("rl", ("sallm_jax.rl.*",)),
    ("evaluation", ("sallm_jax.eval.*",)),
    ("train", ("sallm_jax.train.*",)),
    ("application", ()),  # the entry points, configs, reports, the memory planner, parity
)


def module_names(root: pathlib.Path = ROOT, package: str = PACKAGE,
                 package_dirs: Mapping[str, str] = PACKAGE_DIRS) -> dict[str, pathlib.Path]:
    """Dotted module name -> file, for every .py file of `package` and of the folders
    `package_dirs` maps into it (a package's __init__.py is named by the package)."""
    names = {}
    folders = {package: package, **package_dirs}
    for dotted, folder in folders.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = [*dotted.split("."), *path.relative_to(root / folder).with_suffix("").parts]
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


def folder_of(name: str, package: str = PACKAGE) -> str:
    """The package's top-level folder holding module `name` (a module at the package's root is
    its own node)."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == package and len(parts) > 1 else name


def folder_graph(graph: Mapping[str, Iterable[str]],
                 package: str = PACKAGE) -> dict[str, set[str]]:
    """Top-level folder -> the other folders (and root modules) its modules import."""
    folders: dict[str, set[str]] = {}
    for name, children in graph.items():
        folder = folder_of(name, package)
        folders.setdefault(folder, set()).update(folder_of(c, package) for c in children)
        folders[folder].discard(folder)
    return folders


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


def _matches(pattern: str, name: str) -> bool:
    if pattern.endswith(".*"):
        package = pattern[:-2]
        return name == package or name.startswith(package + ".")
    return name == pattern


def layer_of(name: str, layers: Sequence[tuple[str, Sequence[str]]] = LAYERS) -> int:
    """Index in `layers` of the layer holding module `name`: the layer of the longest pattern
    that matches it, else the last layer."""
    matches = [(len(pattern), index) for index, (_, patterns) in enumerate(layers)
               for pattern in patterns if _matches(pattern, name)]
    return max(matches)[1] if matches else len(layers) - 1


def upward_imports(graph: Mapping[str, Iterable[str]],
                   layers: Sequence[tuple[str, Sequence[str]]] = LAYERS) -> list[tuple[str, str]]:
    """Every (importer, imported) pair whose imported module sits in a higher layer, sorted."""
    return sorted((name, child) for name, children in graph.items() for child in children
                  if layer_of(child, layers) > layer_of(name, layers))


def split_folders(graph: Mapping[str, Iterable[str]],
                  layers: Sequence[tuple[str, Sequence[str]]] = LAYERS,
                  package: str = PACKAGE) -> list[str]:
    """The top-level folders whose modules sit in more than one layer, sorted."""
    found: dict[str, set[int]] = {}
    for name in graph:
        found.setdefault(folder_of(name, package), set()).add(layer_of(name, layers))
    return sorted(folder for folder, held in found.items() if len(held) > 1)


def _layer_label(name: str) -> str:
    index = layer_of(name)
    return f"{index} {LAYERS[index][0]}"


def main(argv: list[str]) -> int:
    prefix = argv[0] if argv else PACKAGE
    graph = import_graph()
    for name in sorted(graph):
        if name == prefix or name.startswith(prefix + "."):
            imports = ", ".join(sorted(graph[name])) or "(nothing)"
            print(f"[{_layer_label(name)}] {name} -> {imports}")
    found = circles(graph)
    for group in found:
        print("CIRCLE: " + " <-> ".join(group))
    folder_circles = circles(folder_graph(graph))
    for group in folder_circles:
        print("FOLDER CIRCLE: " + " <-> ".join(group))
    split = split_folders(graph)
    for folder in split:
        held = sorted({_layer_label(n) for n in graph if folder_of(n) == folder})
        print(f"SPLIT FOLDER: {folder} spans layers {', '.join(held)}")
    upward = upward_imports(graph)
    for name, child in upward:
        print(f"UPWARD: {name} [{_layer_label(name)}] -> {child} [{_layer_label(child)}]")
    print(f"{len(found)} circle(s), {len(folder_circles)} folder circle(s), {len(split)} split "
          f"folder(s) and {len(upward)} upward import(s) among {len(graph)} modules in "
          f"{len(LAYERS)} layers")
    return 1 if found or folder_circles or split or upward else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
