"""Paths into a model's module tree: (attribute or index, ...) tuples naming a layer or variable."""

from __future__ import annotations

from flax import nnx

ParamPath = tuple[str | int, ...]


def node_at(model: nnx.Module, path: ParamPath):
    """The submodule or variable of `model` at `path`."""
    node = model
    for part in path:
        node = node[part] if isinstance(part, int) else getattr(node, part)
    return node


def set_node_at(model: nnx.Module, path: ParamPath, value) -> None:
    """Puts `value` at `path` of `model`, in place."""
    parent = node_at(model, path[:-1])
    if isinstance(path[-1], int):
        parent[path[-1]] = value
    else:
        setattr(parent, path[-1], value)
