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


@functools.partial(nnx.remat, static_argnums=(5,))
def remat_layer(layer: nnx.Module, x: jax.Array, cos: jax.Array, sin: jax.Array,
                mask: jax.Array, index: int, prefix: SharedPrefix | None = None) -> jax.Array:
    """layer(x) without a cache (attending to `prefix` when given), its intermediates
    recomputed in the backward pass."""
    return layer(x, cos, sin, mask, None, index, 0, prefix)[0]


def set_remat(model: nnx.Module, enabled: bool) -> nnx.Module:
    """Switch rematerialisation on or off for every decoder (a module with `.remat`)."""
    for _, module in nnx.iter_modules(model):
        if hasattr(module, "remat") and isinstance(module.remat, bool):
            module.remat = enabled
    return model
