"""Key/value caches for incremental decoding with the Qwen2 decoder: each row's own slots
(`KVCache`), and prompts whose keys and values a group of rows shares (`SharedPrefix`)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from sallm_jax.models.qwen2_config import TextConfig


class KVCache(NamedTuple):
    """Keys and values of every decoder layer, written slot by slot.

    k: [num_layers, batch, max_length, num_key_value_heads, head_dim] (post-RoPE keys).
    v: [num_layers, batch, max_length, num_key_value_heads, head_dim].

    The cache does not track its fill level: callers pass `cache_index` (the first slot to
    write) and a key mask over all `max_length` slots to `forward_embeds`. A NamedTuple is a
    pytree, so a cache can be donated or sharded like any array.
    """

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
    """Keys and values of B prompts, each continued by a group of G rows (row n continues
    prompt n // G: the prompt-major layout of GRPO groups).

    cache: KVCache [num_layers, B, prefix_length, num_key_value_heads, head_dim].
    mask: [B, prefix_length] bool, True on the prompt's real (not padding) tokens.

    Passed as `prefix` to `forward_embeds`, every query also attends to all unmasked keys of
    its prompt, which come before any of its own keys; the prompt is stored and read once per
    group instead of G times (a group's rows decode against one copy of, say, 750 audio
    positions).
    """

    cache: KVCache
    mask: jax.Array

    def layer(self, index: int) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(keys, values, mask) of decoder layer `index`."""
        return self.cache.k[index], self.cache.v[index], self.mask
