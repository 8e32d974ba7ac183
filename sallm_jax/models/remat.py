"""Rematerialisation of decoder layers: the training forward keeps only each layer's input and
recomputes its activations during the backward pass (memory for compute).

`set_remat(model, True)` turns it on for every decoder in `model`; it applies to passes without
a KV cache (log-probs and losses), never to decoding.
"""

from __future__ import annotations

import functools

import jax
from flax import nnx

from sallm_jax.models.kv_cache import SharedPrefix


def remat_layer(layer: nnx.Module, x: jax.Array, cos: jax.Array, sin: jax.Array,
                mask: jax.Array, index: int, prefix: SharedPrefix | None = None) -> jax.Array:
    """layer(x) without a cache (attending to `prefix` when given), its intermediates
    recomputed in the backward pass.

    A pure `jax.checkpoint` over the layer's split state: the layer is only read, so nothing
    is written back across trace levels (which `nnx.remat` attempts, and which fails when the
    layer's variables belong to an outer `jax.grad` trace, as in the GRPO update).
    """
    graphdef, state = nnx.split(layer)

    @functools.partial(jax.checkpoint, static_argnums=(5,))
    def run(state, x, cos, sin, mask, index, prefix):
        return nnx.merge(graphdef, state)(x, cos, sin, mask, None, index, 0, prefix)[0]

    return run(state, x, cos, sin, mask, index, prefix)


def set_remat(model: nnx.Module, enabled: bool) -> nnx.Module:
    """Switch rematerialisation on or off for every decoder (a module with `.remat`)."""
    for _, module in nnx.iter_modules(model):
        if hasattr(module, "remat") and isinstance(module.remat, bool):
            module.remat = enabled
    return model
