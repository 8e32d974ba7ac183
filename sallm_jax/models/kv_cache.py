"""Qwen2 decoder KV caches: per-row slots (`KVCache`) and prompts a group of rows shares
(`SharedPrefix`)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from sallm_jax.models.qwen2_config import TextConfig


class KVCache(NamedTuple):
    """Keys and values of every decoder layer, written slot by slot: k (post-RoPE), v [num_layers,
    batch, max_length, num_key_value_heads, head_dim]; callers pass `cache_index` and a key mask
    over all slots (the fill level is not tracked)."""

    k: jax.Array
    v: jax.Array

    @property
    def max_length(self) -> int:
        return self.k.shape[2]


def init_cache(text_config: TextConfig, batch: int, max_length: int, dtype=jnp.float32) -> KVCache:
    """Zero cache of `max_length` slots for `batch` rows, stored in `dtype`."""
    shape = (
        text_config.num_hidden_layers,
        batch,
        max_length,
        text_config.num_key_value_heads,
        text_config.head_dim,
    )
    return KVCache(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype))


class SharedPrefix(NamedTuple):
    """Keys and values of B prompts, each continued by G rows (row n continues prompt n // G): cache
    [num_layers, B, prefix_length, num_key_value_heads, head_dim], mask [B, prefix_length] bool
    (True on real tokens); as `forward_embeds`'s `prefix`, every query also attends to it."""

    cache: KVCache
    mask: jax.Array

    def layer(self, index: int) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(keys, values, mask) of decoder layer `index`."""
        return self.cache.k[index], self.cache.v[index], self.mask
