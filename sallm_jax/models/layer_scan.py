"""Layer stacks run as one `lax.scan` over weights stored stacked: XLA compiles one layer's body.

`set_scan_layers` moves every decoder's and audio encoder's layers into a `LayerStack` (variables
`layers/layer/...` with a leading layer axis, sharding names led by None), the layout of
training-state checkpoints; `models.hub` uses the per-layer one (`layers_unstacked`). Apply LoRA
first.
"""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from sallm_jax.models.kv_cache import KVCache, SharedPrefix


def compiler_options() -> dict[str, str]:
    """XLA options for the programs running the model: on the CPU, no loop-invariant code motion."""
    # The pass gives each scanned bfloat16 weight stack a float32 copy outside the loop.
    if jax.default_backend() == "cpu":
        return {"xla_disable_hlo_passes": "while-loop-invariant-code-motion"}
    return {}


class StackedLayers(NamedTuple):
    """One layer's structure and every layer's state, stacked on a leading axis."""

    graphdef: nnx.GraphDef
    state: nnx.State

    @property
    def num_layers(self) -> int:
        return jax.tree.leaves(self.state)[0].shape[0]


def _common_graphdef(layers: Sequence[nnx.Module], what: str) -> nnx.GraphDef:
    """The one structure of `layers` (the `what` stack's, as the error names it)."""
    graphdefs = [nnx.graphdef(layer) for layer in layers]
    for index, other in enumerate(graphdefs[1:], start=1):
        if other != graphdefs[0]:
            raise ValueError(
                f"model.scan_layers: {what} layer {index} differs in structure from layer 0 "
                "(adapters on some layers only?); scan needs every layer alike, or set "
                "model.scan_layers = False"
            )
    return graphdefs[0]


class LayerStack(nnx.Module):
    """Layers stored stacked: `layer` is one layer's structure, each variable with a layer axis."""

    def __init__(self, layer: nnx.Module):
        self.layer = layer

    def __len__(self) -> int:
        return jax.tree.leaves(nnx.state(self.layer))[0].shape[0]

    def __getitem__(self, index: int) -> nnx.Module:
        """Layer `index` as a module of its own (a copy of its slices); IndexError past the end."""
        if not 0 <= index < len(self):
            raise IndexError(f"layer {index} of a stack of {len(self)}")
        graphdef, state = nnx.split(self.layer)
        return nnx.merge(graphdef, jax.tree.map(lambda leaf: leaf[index], state))

    def __iter__(self) -> Iterator[nnx.Module]:
        return (self[index] for index in range(len(self)))

    def scanned(self) -> StackedLayers:
        """The stack as `scan_stack` reads it (no copy)."""
        return StackedLayers(*nnx.split(self.layer))


def _take(module: nnx.Module, path: tuple) -> jax.Array:
    """The array of `module`'s variable at `path`, deleted from the module so it can be freed."""
    parent = module
    for part in path[:-1]:
        parent = parent[part] if isinstance(part, int) else getattr(parent, part)
    value = getattr(parent, path[-1]).get_value()
    delattr(parent, path[-1])
    return value


def _put(stack: jax.Array, value: jax.Array, index: jax.Array) -> jax.Array:
    return jax.lax.dynamic_update_index_in_dim(stack, value, index, 0)


def _unstack(value: jax.Array) -> list[jax.Array]:
    """The slices of `value` along its leading axis, on its mesh when it has one."""
    sharding = getattr(value, "sharding", None)
    if not isinstance(sharding, NamedSharding):
        return jax.jit(list)(value)
    out = NamedSharding(sharding.mesh, PartitionSpec(*sharding.spec[1:]))
    return jax.jit(list, out_shardings=[out] * value.shape[0])(value)


def _renamed(variable: nnx.Variable, value: jax.Array, names) -> nnx.Variable:
    """`variable` holding `value`, with sharding names `names` when it had some."""
    new = variable.replace(value)
    if variable.get_metadata().get("out_sharding"):
        new.set_metadata(out_sharding=tuple(names))
    return new


PAGE_BYTES = 4096


def _stacked_sharding(sharding) -> jax.sharding.Sharding | None:
    """`sharding` with a new, unsplit leading (layer) axis."""
    if isinstance(sharding, NamedSharding):
        return NamedSharding(sharding.mesh, PartitionSpec(None, *sharding.spec))
    return sharding


def _tracing() -> bool:
    """Whether a JAX trace (jit, eval_shape, make_jaxpr) is under way."""
    return isinstance(jnp.zeros(()), jax.core.Tracer)


def _page_aligned_empty(shape: tuple, dtype) -> np.ndarray:
    """An uninitialised host array on a page boundary, which XLA's CPU client adopts uncopied."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(size + PAGE_BYTES, np.uint8)
    start = -raw.ctypes.data % PAGE_BYTES
    return raw[start:start + size].view(dtype).reshape(shape)


def _fill_on_host(values: Iterator[jax.Array], shape: tuple, dtype) -> np.ndarray:
    """A host array of `shape` filled one leading slice of `values` at a time."""
    stack = _page_aligned_empty(shape, dtype)
    for index, value in enumerate(values):
        stack[index] = np.asarray(value)
        del value
        # A checkpoint's arrays are held in young reference cycles after their layer lets go
        # of them (granite_speech_2b's kept every MLP kernel until the stack was full: 1.3 GB).
        gc.collect(0)
    return stack


def _fill_in_place(values: Iterator[jax.Array], shape: tuple, dtype, out) -> jax.Array:
    """A device stack of `shape` filled one leading slice at a time (no concatenation)."""
    stack = jax.jit(functools.partial(jnp.zeros, shape, dtype), out_shardings=out)()
    put = jax.jit(_put, donate_argnums=0, out_shardings=out)
    for index, value in enumerate(values):
        stack = put(stack, value, jnp.int32(index))
    return stack


def store_stacked(layers: Sequence[nnx.Module], what: str = "decoder") -> LayerStack:
    """`layers` moved into one LayerStack, variable by variable (ValueError if structures differ);
    peak memory is the weights plus one layer's variable for arrays on one device (stacked on the
    host), or plus one variable's stack for sharded or traced ones (stacked on the devices)."""
    graphdef = _common_graphdef(layers, what)
    # Each variable's path and metadata, from layer 0; the arrays are taken from each layer
    # by path as they are stacked (a flat state of every layer would hold them all).
    template = [(path, variable.replace(None))
                for path, variable in nnx.to_flat_state(nnx.state(layers[0]))]
    stacked = []
    for path, variable in template:
        first = _take(layers[0], path)
        sharding = getattr(first, "sharding", None)
        out = _stacked_sharding(sharding)
        shape, dtype = (len(layers), *first.shape), first.dtype
        on_one_device = (not _tracing() and sharding is not None
                         and len(sharding.device_set) == 1)

        def values(first=first, path=path) -> Iterator[jax.Array]:
            yield first
            for layer in layers[1:]:
                yield _take(layer, path)

        del first
        if on_one_device:
            stack = jax.device_put(_fill_on_host(values(), shape, dtype), out)
        else:
            stack = _fill_in_place(values(), shape, dtype, out)
        names = (None, *(variable.get_metadata().get("out_sharding") or ()))
        stacked.append((path, _renamed(variable, stack, names)))
        del stack
    return LayerStack(nnx.merge(graphdef, nnx.from_flat_state(stacked)))


def store_per_layer(stack: LayerStack) -> nnx.List:
    """The inverse of `store_stacked`, variable by variable."""
    graphdef = nnx.graphdef(stack.layer)
    template = [(path, variable.replace(None))
                for path, variable in nnx.to_flat_state(nnx.state(stack.layer))]
    per_layer: list[list] = [[] for _ in range(len(stack))]
    for path, variable in template:
        names = (variable.get_metadata().get("out_sharding") or (None,))[1:]
        for layer, part in zip(per_layer, _unstack(_take(stack.layer, path)), strict=True):
            layer.append((path, _renamed(variable, part, names)))
    return nnx.List([nnx.merge(graphdef, nnx.from_flat_state(layer)) for layer in per_layer])


class StackedStorage:
    """A decoder or encoder whose `layers` are a list or a `LayerStack`; `stack_name` in errors."""

    layers: nnx.List | LayerStack
    stack_name = "decoder"

    @property
    def scan_layers(self) -> bool:
        return isinstance(self.layers, LayerStack)

    def store_layers(self, stacked: bool) -> None:
        """Moves `layers` into the stacked (scanned) or the per-layer storage."""
        if stacked and not self.scan_layers:
            self.layers = store_stacked(list(self.layers), self.stack_name)
        elif not stacked and self.scan_layers:
            self.layers = store_per_layer(self.layers)


def scan_stack(layers: StackedLayers, carry: Any, step: Callable, remat: bool = False) -> Any:
    """`carry = step(layer, carry, index)` for each layer (index int32) as one `lax.scan`; with
    `remat` each step's activations are recomputed in the backward pass."""

    def body(carry, slice_):
        state, index = slice_
        return step(nnx.merge(layers.graphdef, state), carry, index), None

    if remat:
        body = jax.checkpoint(body)
    indices = jnp.arange(layers.num_layers, dtype=jnp.int32)
    carry, _ = jax.lax.scan(body, carry, (layers.state, indices))
    return carry


def run_layers(layers: nnx.List | LayerStack, x: Any, step: Callable) -> Any:
    """`x = step(layer, x, index)` for each of `layers` in turn: one `lax.scan` over a
    `LayerStack` (index a traced int32), a Python loop over a list (index an int)."""
    if isinstance(layers, LayerStack):
        return scan_stack(layers.scanned(), x, step)
    for index, layer in enumerate(layers):
        x = step(layer, x, index)
    return x


def scan_layers(
    layers: StackedLayers,
    x: jax.Array,
    cos: jax.Array,
    sin: jax.Array,
    mask: jax.Array,
    cache: KVCache | None,
    cache_index: jax.Array | int,
    prefix: SharedPrefix | None,
    remat: bool,
) -> tuple[jax.Array, KVCache | None]:
    """`qwen2.run_layers`'s loop as one scan (layer i uses row i of `cache` and of `prefix`); with
    `remat`, activations are recomputed backward except in a decode step (cache and prefix)."""
    if remat and cache is not None and prefix is None:
        return scan_writing_rows(layers, x, cos, sin, mask, cache, cache_index)

    def step(layer, carry, index):
        x, cache = carry
        return layer(x, cos, sin, mask, cache, index, cache_index, prefix)

    return scan_stack(layers, (x, cache), step, remat=remat and cache is None)


def scan_writing_rows(layers: StackedLayers, x: jax.Array, cos: jax.Array, sin: jax.Array,
                      mask: jax.Array, cache: KVCache,
                      cache_index: jax.Array | int) -> tuple[jax.Array, KVCache]:
    """`scan_layers` for a rematerialised pass that writes `cache` and reads no prefix: each layer's
    cache row is a scan slice, so the backward pass keeps one row per layer, not a whole cache."""

    def body(x, slice_):
        state, k, v = slice_
        layer = nnx.merge(layers.graphdef, state)
        x, row = layer(x, cos, sin, mask, KVCache(k[None], v[None]), 0, cache_index, None)
        return x, (row.k[0], row.v[0])

    x, (k, v) = jax.lax.scan(jax.checkpoint(body), x, (layers.state, cache.k, cache.v))
    return x, KVCache(k, v)


def set_scan_layers(model: nnx.Module, enabled: bool) -> nnx.Module:
    """Switches the layer scan on or off for every decoder and audio encoder in `model`."""
    for _, module in list(nnx.iter_modules(model)):
        if isinstance(module, StackedStorage):
            module.store_layers(enabled)
    return model


def stacked_node(model: nnx.Module, path: tuple) -> tuple[Any, bool]:
    """The node at a per-layer `path` and whether it lies in a `LayerStack` (it then holds every
    layer's values, layer axis first)."""
    node, stacked = model, False
    for part in path:
        if isinstance(node, LayerStack) and isinstance(part, int):
            node, stacked = node.layer, True
        else:
            node = node[part] if isinstance(part, int) else getattr(node, part)
    return node, stacked


class LayerViews:
    """Nodes of `model` at per-layer paths; a stacked layer is copied once, kept until the next."""

    def __init__(self, model: nnx.Module):
        self.model = model
        self._key: tuple | None = None
        self._layer: nnx.Module | None = None

    def node(self, path: tuple) -> Any:
        node = self.model
        for depth, part in enumerate(path):
            if isinstance(node, LayerStack) and isinstance(part, int):
                if self._key != (path[:depth], part):
                    self._key = self._layer = None  # the last layer's copy goes first
                    self._layer, self._key = node[part], (path[:depth], part)
                node = self._layer
            else:
                node = node[part] if isinstance(part, int) else getattr(node, part)
        return node


@contextlib.contextmanager
def layers_unstacked(model: nnx.Module) -> Iterator[nnx.Module]:
    """`model` with its stacked decoders and encoders stored per layer in the block (Hub names)."""
    stacked = [module for _, module in nnx.iter_modules(model)
               if isinstance(module, StackedStorage) and module.scan_layers]
    for module in stacked:
        module.store_layers(False)
    try:
        yield model
    finally:
        for module in stacked:
            module.store_layers(True)
