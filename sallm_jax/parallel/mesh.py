"""The device mesh from config: named axes `data`, `fsdp`, `tensor`; -1 takes the rest."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
from jax.sharding import Mesh

from sallm_jax.runtime.user_errors import ConfigError

AXES = ("data", "fsdp", "tensor")


def mesh_shape(sizes: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
    """Sizes in AXES order, one -1 filled to `num_devices`; else ConfigError (parallel.mesh)."""
    unknown = [a for a in sizes if a not in AXES]
    if unknown:
        raise ConfigError(f"parallel.mesh: unknown axes {unknown}; expected a subset of {AXES}")
    shape = [int(sizes.get(a, 1)) for a in AXES]
    free = [i for i, s in enumerate(shape) if s == -1]
    if len(free) > 1 or any(s == 0 or s < -1 for s in shape):
        raise ConfigError(f"parallel.mesh: sizes must be positive with at most one -1, got "
                          f"{dict(sizes)}")
    known = math.prod(s for s in shape if s != -1)
    if free:
        if num_devices % known:
            raise ConfigError(f"parallel.mesh: {dict(sizes)} cannot fill {num_devices} devices "
                              f"({num_devices} is not a multiple of {known})")
        shape[free[0]] = num_devices // known
    if math.prod(shape) != num_devices:
        raise ConfigError(f"parallel.mesh: {dict(sizes)} uses {math.prod(shape)} devices, but "
                          f"{num_devices} are present")
    return tuple(shape)


def make_mesh(sizes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over all devices (of every process) with axes AXES."""
    devices = list(jax.devices() if devices is None else devices)
    # Auto axes: shardings are constraints that XLA propagates, not part of the array types.
    return jax.make_mesh(mesh_shape(sizes, len(devices)), AXES, devices=devices,
                         axis_types=(jax.sharding.AxisType.Auto,) * len(AXES))
