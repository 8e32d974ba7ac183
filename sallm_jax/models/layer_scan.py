"""Layer stacks as one `lax.scan` over their stacked weights: XLA compiles one layer's program
instead of one copy per layer (the unrolled loop of a 40-layer decoder gives each program that
runs it, the prefill, every decode step, the log-prob pass and its gradient, forty bodies to
optimise; a 16-block conformer or a 32-layer Whisper encoder adds its own to every program that
encodes audio), with the same arithmetic.

`set_scan_layers(model, True)` turns it on for every decoder and audio encoder in `model`
(`StackedStorage`): each then stores its layers stacked (`LayerStack`), one module whose every
variable has a leading layer axis, so the programs read the weights where they lie. A stack
built inside a program would be a second copy of the weights it stacks, and XLA's CPU backend
keeps it in float32 for a bfloat16 model of 16 layers or more (granite_speech_2b at 16 layers:
an SFT step peaked at 10.6 GB with 3.0 GB of weights; its 16-block conformer, 0.88 GB, took
1.0 GB of temporaries to encode one clip with its stack built in the program).

Stored stacked, a module's layer parameters are named `layers/layer/...` with the layer axis
first (their sharding names lead with None); checkpoints of the training state follow the
layout, and `models.hub` reads and writes the per-layer layout (`layers_unstacked` for an
export). Apply LoRA before stacking.
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
    """XLA options for the programs that run the model (rollout, log-probs, the SFT step and
    the GRPO update).

    On the CPU, XLA computes a bfloat16 matmul in float32, and its while-loop invariant code
    motion converts each scanned weight stack to float32 once, before the loop, rather than one
    layer per iteration: every bfloat16 weight of the scanned layers then lives a second time at
    twice its bytes for the whole program. Without that pass the conversion stays inside the
    loop, one layer at a time (granite_speech_2b's widths with 8 decoder layers, 1.36 GB in
    bfloat16: the SFT step's peak resident memory fell from 7.27 to 6.25 GB; on the f32 tiny
    model the GRPO stage ran no slower). Accelerators compute in bfloat16, so there the
    programs keep every pass.
    """
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
    """Layers stored stacked: `layer` has one layer's structure, every variable a leading axis
    of `len(self)` layers."""

    def __init__(self, layer: nnx.Module):
        self.layer = layer

    def __len__(self) -> int:
        return jax.tree.leaves(nnx.state(self.layer))[0].shape[0]

    def __getitem__(self, index: int) -> nnx.Module:
        """Layer `index` as a module of its own (a copy of its slices)."""
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
    """The array of `module`'s variable at `path`; the module gives the variable up, so that
    the array is freed once the caller lets go of it."""
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
    """The sharding of a stack of arrays laid out as `sharding`: the same, with the new
    leading (layer) axis unsplit."""
    if isinstance(sharding, NamedSharding):
        return NamedSharding(sharding.mesh, PartitionSpec(None, *sharding.spec))
    return sharding


def _tracing() -> bool:
    """Whether a JAX trace (jit, eval_shape, make_jaxpr) is under way: every new array is then
    a tracer. A stack built there is part of the traced program, never a constant of it."""
    return isinstance(jnp.zeros(()), jax.core.Tracer)


def _page_aligned_empty(shape: tuple, dtype) -> np.ndarray:
    """An uninitialised host array whose data starts on a page boundary: XLA's CPU client then
    takes it as a device buffer without copying (`device_put`), where an unaligned one is
    copied whole."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(size + PAGE_BYTES, np.uint8)
    start = -raw.ctypes.data % PAGE_BYTES
    return raw[start:start + size].view(dtype).reshape(shape)


def _fill_on_host(values: Iterator[jax.Array], shape: tuple, dtype) -> np.ndarray:
    """A host array of `shape` filled from one leading slice of `values` at a time. The
    operating system gives the array's pages only as they are written, so the stack grows as
    the slices are freed."""
    stack = _page_aligned_empty(shape, dtype)
    for index, value in enumerate(values):
        stack[index] = np.asarray(value)
        del value
        # A checkpoint's arrays are held in young reference cycles after their layer lets go
        # of them (granite_speech_2b's kept every MLP kernel until the stack was full: 1.3 GB).
        gc.collect(0)
    return stack


def _fill_in_place(values: Iterator[jax.Array], shape: tuple, dtype, out) -> jax.Array:
    """A stack of `shape` allocated on the devices, then filled one leading slice at a time
    (XLA's CPU backend computes a bfloat16 concatenation in float32, several times the stack's
    bytes)."""
    stack = jax.jit(functools.partial(jnp.zeros, shape, dtype), out_shardings=out)()
    put = jax.jit(_put, donate_argnums=0, out_shardings=out)
    for index, value in enumerate(values):
        stack = put(stack, value, jnp.int32(index))
    return stack


def store_stacked(layers: Sequence[nnx.Module], what: str = "decoder") -> LayerStack:
    """`layers` moved into one LayerStack, variable by variable and layer by layer: each layer
    gives up a variable once it is in its stack. An array on one device is stacked on the
    host and handed to the device as it is (`_fill_on_host`), so the move holds the weights
    plus one layer's variable; a sharded or traced one is stacked on its devices
    (`_fill_in_place`), which holds the weights plus one variable's whole stack."""
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
    """The inverse of `store_stacked`, variable by variable (the stack gives each up once it is
    split)."""
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
    """A decoder or audio encoder whose `layers` are a list, or with the layer scan on a
    `LayerStack`; `stack_name` names the stack in errors."""

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
    """`carry = step(layer, carry, index)` for every layer in turn, as one `lax.scan` (index is
    the layer's int32 position); with `remat` each step's activations are recomputed in the
    backward pass."""

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
    """Every layer in turn on x [batch, seq, hidden], as `qwen2.run_layers`'s loop: layer i
    reads and writes row i of `cache` and reads row i of `prefix`. With `remat` each layer's
    activations are recomputed in the backward pass, as `remat.remat_layer`, in a pass without
    a cache and in one that writes a cache and reads no prefix (a prompt's pass,
    `scan_writing_rows`); a decode step (cache and prefix) keeps them."""
    if remat and cache is not None and prefix is None:
        return scan_writing_rows(layers, x, cos, sin, mask, cache, cache_index)

    def step(layer, carry, index):
        x, cache = carry
        return layer(x, cos, sin, mask, cache, index, cache_index, prefix)

    return scan_stack(layers, (x, cache), step, remat=remat and cache is None)


def scan_writing_rows(layers: StackedLayers, x: jax.Array, cos: jax.Array, sin: jax.Array,
                      mask: jax.Array, cache: KVCache,
                      cache_index: jax.Array | int) -> tuple[jax.Array, KVCache]:
    """`scan_layers` for a pass that writes `cache` and reads no prefix, each layer
    rematerialised: layer i's cache row goes into the scan as its slice and comes out as its
    output, so the backward pass keeps each layer's input and row, not a whole cache per
    layer (which a cache carried through the scan would make it keep)."""

    def body(x, slice_):
        state, k, v = slice_
        layer = nnx.merge(layers.graphdef, state)
        x, row = layer(x, cos, sin, mask, KVCache(k[None], v[None]), 0, cache_index, None)
        return x, (row.k[0], row.v[0])

    x, (k, v) = jax.lax.scan(jax.checkpoint(body), x, (layers.state, cache.k, cache.v))
    return x, KVCache(k, v)


def set_scan_layers(model: nnx.Module, enabled: bool) -> nnx.Module:
    """Switch the layer scan on or off for every decoder and audio encoder in `model`, moving
    their layers' storage."""
    for _, module in list(nnx.iter_modules(model)):
        if isinstance(module, StackedStorage):
            module.store_layers(enabled)
    return model


def stacked_node(model: nnx.Module, path: tuple) -> tuple[Any, bool]:
    """The node at a per-layer `path` of `model` (an int after a `LayerStack` picks a layer),
    read where it lies: for a path through a stack, the stacked node (every layer's values,
    the layer axis first) and True; else the node itself and False."""
    node, stacked = model, False
    for part in path:
        if isinstance(node, LayerStack) and isinstance(part, int):
            node, stacked = node.layer, True
        else:
            node = node[part] if isinstance(part, int) else getattr(node, part)
    return node, stacked


class LayerViews:
    """Nodes of `model` at per-layer paths, a stacked layer taken out one at a time: the layer
    last asked for is kept (a copy of its slices, `LayerStack[index]`), so reading a layer's
    variables in turn copies that layer once and never the whole stack."""

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
    """`model` with every stacked decoder in per-layer storage for the block, stacked again
    after it (the Hub layout's per-layer names, e.g. for an export)."""
    stacked = [module for _, module in nnx.iter_modules(model)
               if isinstance(module, StackedStorage) and module.scan_layers]
    for module in stacked:
        module.store_layers(False)
    try:
        yield model
    finally:
        for module in stacked:
            module.store_layers(True)
