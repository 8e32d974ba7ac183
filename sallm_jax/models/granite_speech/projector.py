"""Windowed Q-Former projector of Granite Speech (`GraniteSpeechEncoderProjector`) in Flax NNX.

Encoder states, zero-padded to whole windows of `window_size`, are read per window by
`num_queries` (window_size // downsample_rate) learned queries through the input LayerNorm and
BERT-style post-LN layers:
  x = LN(x + dense(self_attn(x)))
  x = LN(x + dense(cross_attn(x, window)))     on layers i with i % cross_attention_frequency == 0
  x = LN(x + dense_out(GELU(dense_in(x))))     (the `*_query` feed-forward; exact erf GELU)
then `linear` maps each query to the LLM width. Nothing is masked, as in transformers.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from sallm_jax.models.attention import dot_product_attention
from sallm_jax.models.granite_speech.config import GraniteProjectorConfig, GraniteSpeechConfig
from sallm_jax.models.layers import layer_norm, linear


class QFormerAttention(nnx.Module):
    """Multi-head attention with its output block: LN(x + dense(attn(x, context)))."""

    def __init__(
        self, config: GraniteProjectorConfig, kv_dim: int, *, rngs: nnx.Rngs, dtype, param_dtype
    ):
        h = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        if self.head_dim * self.num_heads != h:
            raise ValueError(
                f"projector_config.hidden_size={h} is not divisible by "
                f"projector_config.num_attention_heads={self.num_heads}"
            )
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.query = linear(h, h, ("audio_embed", "heads"), **kw)
        self.key = linear(kv_dim, h, ("audio_embed", "heads"), **kw)
        self.value = linear(kv_dim, h, ("audio_embed", "heads"), **kw)
        self.dense = linear(h, h, ("heads", "audio_embed"), **kw)
        self.norm = layer_norm(h, config.layer_norm_eps, dtype, param_dtype, rngs)

    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        """x [windows, queries, H], context [windows, keys, kv_dim] -> [windows, queries, H]."""
        n, q_len, _ = x.shape
        k_len = context.shape[1]
        q = self.query(x).reshape(n, q_len, self.num_heads, self.head_dim)
        k = self.key(context).reshape(n, k_len, self.num_heads, self.head_dim)
        v = self.value(context).reshape(n, k_len, self.num_heads, self.head_dim)
        mask = jnp.ones((n, q_len, k_len), bool)
        attn = dot_product_attention(q, k, v, mask, scale=self.head_dim**-0.5)
        return self.norm(self.dense(attn) + x)


class QFormerLayer(nnx.Module):
    """Self-attention, optional cross-attention to the window, feed-forward (query path only)."""

    def __init__(
        self,
        config: GraniteProjectorConfig,
        has_cross_attention: bool,
        *,
        rngs: nnx.Rngs,
        dtype,
        param_dtype,
    ):
        h = config.hidden_size
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.attention = QFormerAttention(config, h, **kw)
        self.crossattention = (
            QFormerAttention(config, config.encoder_hidden_size, **kw)
            if has_cross_attention
            else None
        )
        self.intermediate = linear(h, config.intermediate_size, ("audio_embed", "audio_mlp"), **kw)
        self.output = linear(config.intermediate_size, h, ("audio_mlp", "audio_embed"), **kw)
        self.output_norm = layer_norm(h, config.layer_norm_eps, dtype, param_dtype, rngs)

    def __call__(self, x: jax.Array, window: jax.Array) -> jax.Array:
        """x [windows, queries, H], window [windows, window_size, D_enc] -> like x."""
        x = self.attention(x, x)
        if self.crossattention is not None:
            x = self.crossattention(x, window)
        hidden = jax.nn.gelu(self.intermediate(x), approximate=False)
        return self.output_norm(self.output(hidden) + x)


class GraniteProjector(nnx.Module):
    """Encoder states [batch, frames, D_enc] -> audio embeddings [batch, tokens, text hidden]."""

    def __init__(
        self,
        config: GraniteSpeechConfig,
        *,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        pc = config.projector
        self.window_size = config.window_size
        self.num_queries = config.num_queries
        self.dtype = dtype
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        # transformers draws the queries from N(0, 1), not the 0.02 of the other weights.
        self.query = nnx.Param(
            nnx.with_partitioning(
                nnx.initializers.normal(1.0), (None, None, "audio_embed"), eager_sharding=False
            )(rngs.params(), (1, self.num_queries, pc.hidden_size), param_dtype)
        )
        self.layernorm = layer_norm(pc.hidden_size, pc.layer_norm_eps, dtype, param_dtype, rngs)
        self.layers = nnx.List(
            [
                QFormerLayer(config.projector, i % pc.cross_attention_frequency == 0, **kw)
                for i in range(pc.num_hidden_layers)
            ]
        )
        self.linear = linear(
            pc.hidden_size, config.text.hidden_size, ("audio_embed", "embed"), **kw
        )

    def __call__(self, encoder_states: jax.Array) -> jax.Array:
        """[batch, frames, D_enc] -> [batch, ceil(frames / window_size) * num_queries, hidden]."""
        batch, frames, dim = encoder_states.shape
        num_windows = math.ceil(frames / self.window_size)
        pad = num_windows * self.window_size - frames
        windows = jnp.pad(encoder_states, ((0, 0), (0, pad), (0, 0)))
        windows = windows.reshape(batch * num_windows, self.window_size, dim).astype(self.dtype)
        queries = self.layernorm(self.query[...].astype(self.dtype))
        x = jnp.broadcast_to(queries, (batch * num_windows, *queries.shape[1:]))
        for layer in self.layers:
            x = layer(x, windows)
        x = x.reshape(batch, num_windows * self.num_queries, x.shape[-1])
        return self.linear(x)
