"""Checkpoint tensors into a model's variables: checked, converted and placed block by block."""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import numpy as np
from flax import nnx

from sallm_jax.models.hub.param_table import Transform
from sallm_jax.models.hub.safetensors_io import CHUNK_BYTES, SafetensorsDir, aligned_empty
from sallm_jax.models.paths import ParamPath, node_at


def _shape(tensors: Mapping[str, np.ndarray], key: str) -> tuple[int, ...]:
    if isinstance(tensors, SafetensorsDir):
        return tensors.shape(key)
    return tuple(np.shape(tensors[key]))


def _itemsize(tensors: Mapping[str, np.ndarray], key: str) -> int:
    if isinstance(tensors, SafetensorsDir):
        return tensors.dtype(key).itemsize
    return np.asarray(tensors[key]).dtype.itemsize


def _rows(tensors: Mapping[str, np.ndarray], key: str, rows: slice) -> np.ndarray:
    if isinstance(tensors, SafetensorsDir):
        return tensors.read_rows(key, rows)
    return np.asarray(tensors[key])[rows]


def converted_block(tensors: Mapping[str, np.ndarray], key: str, transform: Transform,
                    index: tuple[slice, ...], shape: tuple[int, ...], dtype) -> np.ndarray:
    """Block `index` of tensor `key` in the model's layout (`shape`) and `dtype`, in an aligned
    buffer filled from the stored rows CHUNK_BYTES at a time."""
    bounds = [range(*s.indices(n)) for s, n in zip(index, shape, strict=True)] if shape else []
    out = aligned_empty([len(b) for b in bounds], dtype)
    if not shape:
        out[...] = _rows(tensors, key, slice(None))
        return out
    reverse = transform != "copy"
    source = bounds[::-1] if reverse else bounds
    rows, rest = source[0], tuple(slice(b.start, b.stop) for b in source[1:])
    stored = _shape(tensors, key)
    row_bytes = max(1, math.prod(stored[1:]) * _itemsize(tensors, key))
    step = max(1, CHUNK_BYTES // row_bytes)
    for first in range(rows.start, rows.stop, step):
        last = min(first + step, rows.stop)
        chunk = _rows(tensors, key, slice(first, last))[(slice(None), *rest)]
        at = slice(first - rows.start, last - rows.start)
        if reverse:
            out[..., at] = chunk.transpose(tuple(range(chunk.ndim))[::-1])
        else:
            out[at] = chunk
    return out


def placed_tensor(tensors: Mapping[str, np.ndarray], key: str, transform: Transform,
                  target) -> jax.Array:
    """Tensor `key` in the layout, dtype and `NamedSharding` of `target` (one device without one),
    each process reading only the rows of the blocks it holds."""
    sharding = getattr(target, "sharding", None)
    if not isinstance(sharding, jax.sharding.NamedSharding):
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    shape, dtype = tuple(target.shape), target.dtype
    return jax.make_array_from_callback(
        shape, sharding, lambda index: converted_block(tensors, key, transform, index, shape,
                                                      dtype))


def assign_tensors(
    model: nnx.Module,
    table: Mapping[str, tuple[ParamPath, Transform]],
    tensors: Mapping[str, np.ndarray],
    keys: Mapping[str, str],
    *,
    source: str,
) -> nnx.Module:
    """Fills `model`'s variables (concrete or abstract) from `tensors`, checked before any change.

    `table`: Hub key -> (variable path, layout conversion), e.g. `hf_param_map(config)`; `keys`: Hub
    key -> key of `tensors`; `source` names the checkpoint in errors. A `SafetensorsDir` is checked
    from its headers, then read, cast and placed one tensor at a time. ValueError names every
    missing key, unexpected key and shape mismatch at once.
    """
    problems = []
    missing = sorted(set(table) - set(keys))
    unexpected = sorted(set(keys) - set(table))
    if missing:
        problems.append(f"missing keys: {missing}")
    if unexpected:
        problems.append(f"unexpected keys: {unexpected}")
    for key in sorted(set(table) & set(keys)):
        path, transform = table[key]
        stored = _shape(tensors, keys[key])
        # Both layout conversions reverse the axes (linear .T, conv transpose(2, 1, 0)).
        converted = stored if transform == "copy" else stored[::-1]
        expected = tuple(node_at(model, path).get_value().shape)
        if converted != expected:
            problems.append(
                f"shape mismatch for {key}: checkpoint {stored} "
                f"({transform} -> {converted}), model expects {expected}"
            )
    if problems:
        name = type(model).__name__
        raise ValueError(f"cannot load {source} into {name}: " + "; ".join(problems))
    for key in sorted(table):
        path, transform = table[key]
        variable = node_at(model, path)
        variable.set_value(placed_tensor(tensors, keys[key], transform, variable.get_value()))
    return model
