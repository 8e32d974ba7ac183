"""Chunked decoding through one KV cache, shared by the models' parity tests."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from sallm_jax.models.kv_cache import KVCache, init_cache


@nnx.jit
def _encode_and_embed(model, input_ids, features, lengths):
    return model.embed(input_ids, model.encode_audio(features, lengths))


@nnx.jit
def _step(model, embeds, positions, key_mask, cache, index):
    return model.forward_embeds(embeds, positions, key_mask, cache, index)


def cached_logits(model, input_ids: np.ndarray, attention_mask: np.ndarray,
                  features: np.ndarray, lengths: np.ndarray,
                  chunks: list[tuple[int, int]], extra: int) -> tuple[np.ndarray, KVCache]:
    """Logits [B, S, vocab] of `model` run over the whole (left-padded) sequence in `chunks`
    ([start, end) spans covering 0..S), each through the cache the previous ones wrote, and
    that cache. It has `extra` unwritten slots past S, which the causal rule must hide."""
    batch, seq = input_ids.shape
    embeds = _encode_and_embed(model, jnp.asarray(input_ids), jnp.asarray(features),
                               jnp.asarray(lengths))
    positions = jnp.maximum(jnp.cumsum(attention_mask, axis=1) - 1, 0).astype(jnp.int32)
    key_mask = jnp.concatenate([attention_mask.astype(bool), np.ones((batch, extra), bool)],
                               axis=1)
    cache = init_cache(model.config.text, batch, seq + extra, jnp.float32)
    pieces = []
    for start, end in chunks:
        logits, cache = _step(model, embeds[:, start:end], positions[:, start:end], key_mask,
                              cache, jnp.int32(start))
        pieces.append(np.asarray(logits))
    return np.concatenate(pieces, axis=1), cache
