"""Logical-axis rules (`embed`, `mlp`, ...) -> mesh axes; batches split over `data` x `fsdp`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]
BATCH_AXES = ("data", "fsdp")

DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("embed", "fsdp"),
    ("audio_embed", "fsdp"),
    ("mlp", "tensor"),
    ("audio_mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("vocab", "tensor"),
)


def _axis_size(axis_sizes: Mapping[str, int], axes) -> int:
    if axes is None:
        return 1
    names = (axes,) if isinstance(axes, str) else axes
    return math.prod(axis_sizes[name] for name in names)


def logical_to_mesh(spec: PartitionSpec, rules: Rules) -> PartitionSpec:
    """`spec` with logical names mapped to mesh axes; unmapped or already-used axes unsharded."""
    table, used, out = dict(rules), set(), []
    for name in spec:
        axes = table.get(name) if name is not None else None
        names = () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
        if used & set(names):
            axes, names = None, ()
        used |= set(names)
        out.append(axes)
    return PartitionSpec(*out)


def mesh_specs(params: nnx.State, axis_sizes: Mapping[str, int], rules: Rules) -> nnx.State:
    """Mesh PartitionSpec of every parameter, checking that each sharded dimension divides.

    ValueError otherwise, naming the parameter, its dimension and the rule (`parallel.rules`)."""

    def one(path, spec, leaf):
        mesh_spec = logical_to_mesh(spec, rules)
        for dim, (logical, axes) in enumerate(zip(spec, mesh_spec, strict=False)):
            size = _axis_size(axis_sizes, axes)
            if leaf.shape[dim] % size:
                name = "/".join(str(getattr(k, "key", getattr(k, "idx", ""))) for k in path
                                if not isinstance(k, jax.tree_util.GetAttrKey))
                raise ValueError(f"{name}: dimension {dim} ({logical!r}, size {leaf.shape[dim]})"
                                 f" does not divide over mesh axis {axes} of size {size} "
                                 f"(parallel.rules maps {logical!r} -> {axes!r})")
        return mesh_spec

    return jax.tree_util.tree_map_with_path(
        one, nnx.get_partition_spec(params), params,
        is_leaf=lambda x: isinstance(x, PartitionSpec))


def param_shardings(params: nnx.State, mesh: Mesh, rules: Rules) -> nnx.State:
    """NamedSharding of every parameter (see `mesh_specs` for the divisibility check)."""
    specs = mesh_specs(params, dict(mesh.shape), rules)
    return jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs,
                        is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over data x fsdp; the other axes replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def data_parallel_size(mesh: Mesh) -> int:
    return _axis_size(dict(mesh.shape), BATCH_AXES)
