"""Decoder layers as one `lax.scan` over their stacked weights: XLA compiles one layer's program
instead of `num_hidden_layers` copies of it (the unrolled loop of a 40-layer decoder gives each
program that runs it, the prefill, every decode step, the log-prob pass and its gradient, forty
bodies to optimise), with the same arithmetic.

`set_scan_layers(model, True)` turns it on for every decoder in `model`. The parameters keep
their per-layer layout (checkpoints, LoRA, sharding rules and Hub key maps are unchanged); the
stack is built inside the compiled program, `stack_layers` once before a decode loop
(`rl/rollout.py`), so that its steps read the stacked copy rather than build it again.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from sallm_jax.models.kv_cache import KVCache, SharedPrefix


class StackedLayers(NamedTuple):
    """One decoder layer's structure and every layer's state, stacked on a leading axis."""

    graphdef: nnx.GraphDef
    state: nnx.State

    @property
    def num_layers(self) -> int:
        return jax.tree.leaves(self.state)[0].shape[0]


def stack_layers(layers) -> StackedLayers:
    """The layers of a decoder (an `nnx.List` of structurally equal modules), stacked."""
    splits = [nnx.split(layer) for layer in layers]
    graphdef = splits[0][0]
    for index, (other, _) in enumerate(splits[1:], start=1):
        if other != graphdef:
            raise ValueError(
                f"model.scan_layers: decoder layer {index} differs in structure from layer 0 "
                "(adapters on some layers only?); scan needs every layer alike, or set "
                "model.scan_layers = False"
            )
    state = jax.tree.map(lambda *leaves: jnp.stack(leaves), *(s for _, s in splits))
    return StackedLayers(graphdef, state)


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
    reads and writes row i of `cache` and reads row i of `prefix`. With `remat` (and no cache)
    each layer's activations are recomputed in the backward pass, as `remat.remat_layer`."""

    def body(carry, slice_):
        x, cache = carry
        state, index = slice_
        layer = nnx.merge(layers.graphdef, state)
        return layer(x, cos, sin, mask, cache, index, cache_index, prefix), None

    if remat and cache is None:
        body = jax.checkpoint(body)
    indices = jnp.arange(layers.num_layers, dtype=jnp.int32)
    (x, cache), _ = jax.lax.scan(body, (x, cache), (layers.state, indices))
    return x, cache


def set_scan_layers(model: nnx.Module, enabled: bool) -> nnx.Module:
    """Switch the layer scan on or off for every decoder (a module with `.scan_layers`)."""
    for _, module in nnx.iter_modules(model):
        if hasattr(module, "scan_layers") and isinstance(module.scan_layers, bool):
            module.scan_layers = enabled
    return model
