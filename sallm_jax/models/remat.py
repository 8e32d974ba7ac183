"""Rematerialisation of decoder layers: the backward pass recomputes each layer's activations.
`set_remat(model, True)` applies it to passes without a KV cache (log-probs, losses)."""

from __future__ import annotations

import functools

import jax
from flax import nnx

from sallm_jax.models.kv_cache import SharedPrefix


def remat_layer(layer: nnx.Module, x: jax.Array, cos: jax.Array, sin: jax.Array,
                mask: jax.Array, index: int, prefix: SharedPrefix | None = None) -> jax.Array:
    """layer(x) without a cache (attending to `prefix` if given), intermediates recomputed backward;
    a pure `jax.checkpoint`, as `nnx.remat` fails under an outer `jax.grad` (the GRPO update)."""
    graphdef, state = nnx.split(layer)

    @functools.partial(jax.checkpoint, static_argnums=(5,))
    def run(state, x, cos, sin, mask, index, prefix):
        return nnx.merge(graphdef, state)(x, cos, sin, mask, None, index, 0, prefix)[0]

    return run(state, x, cos, sin, mask, index, prefix)


def set_remat(model: nnx.Module, enabled: bool) -> nnx.Module:
    """Switches rematerialisation on or off for every decoder (a bool `.remat`); returns `model`."""
    for _, module in nnx.iter_modules(model):
        if hasattr(module, "remat") and isinstance(module.remat, bool):
            module.remat = enabled
    return model
