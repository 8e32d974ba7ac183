"""Qwen2 decoder-only language model (`Qwen2ForCausalLM` in transformers) in Flax NNX: pre-RMSNorm
layers, grouped-query attention (q/k/v biases), rotate-half RoPE, SiLU-gated MLP, final RMSNorm,
lm_head (`embed_tokens`.T when tied); norms, softmax and logits in float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sallm_jax.models.attention import (
    dot_product_attention,
    fused_attention,
    normal_init,
    prefix_attention,
)
from sallm_jax.models.kv_cache import KVCache, SharedPrefix
from sallm_jax.models.layer_scan import StackedStorage, scan_layers
from sallm_jax.models.layers import linear
from sallm_jax.models.qwen2_config import TextConfig
from sallm_jax.models.remat import remat_layer
from sallm_jax.models.vocab_projection import vocab_logits


class RMSNorm(nnx.Module):
    """RMSNorm as transformers' `Qwen2RMSNorm`: normalise in float32, cast back, then scale."""

    def __init__(self, dim: int, eps: float, *, dtype, param_dtype):
        self.eps = eps
        self.dtype = dtype
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [..., dim] -> [..., dim] in the compute dtype."""
        x32 = x.astype(jnp.float32)
        variance = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        normed = (x32 * jax.lax.rsqrt(variance + self.eps)).astype(self.dtype)
        return self.scale[...].astype(self.dtype) * normed


def rope_inv_freq(head_dim: int, theta: float) -> jax.Array:
    """[head_dim // 2] float32: 1 / theta^(arange(0, d, 2) / d)."""
    exponent = jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim
    return 1.0 / (theta**exponent)


def rope_cos_sin(
    positions: jax.Array, head_dim: int, theta: float, dtype
) -> tuple[jax.Array, jax.Array]:
    """cos, sin tables [batch, seq, head_dim] for integer `positions` [batch, seq]."""
    freqs = positions.astype(jnp.float32)[..., None] * rope_inv_freq(head_dim, theta)
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb).astype(dtype), jnp.sin(emb).astype(dtype)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate-half RoPE: x [batch, seq, heads, head_dim], cos/sin [batch, seq, head_dim]."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, :, None, :] + rotated * sin[:, :, None, :]


class Qwen2Attention(nnx.Module):
    """Grouped-query self-attention (o_proj without bias), logits scaled by `scale` (default
    head_dim**-0.5); ValueError unless num_key_value_heads divides num_attention_heads."""

    def __init__(
        self,
        config: TextConfig,
        *,
        rngs: nnx.Rngs,
        dtype,
        param_dtype,
        qkv_bias: bool = True,
        scale: float | None = None,
    ):
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scale = self.head_dim**-0.5 if scale is None else float(scale)
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"text.num_attention_heads={self.num_heads} is not a multiple of "
                f"text.num_key_value_heads={self.num_kv_heads}"
            )
        hidden = config.hidden_size
        q_dim = self.num_heads * self.head_dim
        kv_dim = self.num_kv_heads * self.head_dim
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.q_proj = linear(hidden, q_dim, ("embed", "heads"), use_bias=qkv_bias, **kw)
        self.k_proj = linear(hidden, kv_dim, ("embed", "kv_heads"), use_bias=qkv_bias, **kw)
        self.v_proj = linear(hidden, kv_dim, ("embed", "kv_heads"), use_bias=qkv_bias, **kw)
        self.o_proj = linear(q_dim, hidden, ("heads", "embed"), use_bias=False, **kw)
        self.fused = False  # `set_fused_attention`

    def __call__(
        self,
        x: jax.Array,
        cos: jax.Array,
        sin: jax.Array,
        mask: jax.Array,
        cache: KVCache | None = None,
        layer_index: int = 0,
        cache_index: jax.Array | int = 0,
        prefix: SharedPrefix | None = None,
    ) -> tuple[jax.Array, KVCache | None]:
        """Attends new tokens x [batch, seq, hidden] to themselves or the cache, and to `prefix`.

        cos, sin: [batch, seq, head_dim]; mask: [batch, seq, keys] bool (keys = seq, or the cache's
        max_length); `cache` (the model's, or None) takes the new keys/values in row `layer_index`
        from slot `cache_index`; `prefix` (`SharedPrefix`) comes before the rows' own keys. Returns
        ([batch, seq, hidden], cache or None).
        """
        batch, seq, _ = x.shape
        q = self.q_proj(x).reshape(batch, seq, self.num_heads, self.head_dim)
        k = self.k_proj(x).reshape(batch, seq, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).reshape(batch, seq, self.num_kv_heads, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            start = (layer_index, 0, cache_index, 0, 0)
            cache = KVCache(
                k=jax.lax.dynamic_update_slice(cache.k, k[None].astype(cache.k.dtype), start),
                v=jax.lax.dynamic_update_slice(cache.v, v[None].astype(cache.v.dtype), start),
            )
            k, v = cache.k[layer_index], cache.v[layer_index]
        k, v = k.astype(q.dtype), v.astype(q.dtype)
        if prefix is None:
            attend = fused_attention if self.fused else dot_product_attention
            out = attend(q, k, v, mask, scale=self.scale)
        else:
            prefix_k, prefix_v, prefix_mask = prefix.layer(layer_index)
            out = prefix_attention(q, k, v, mask, prefix_k.astype(q.dtype),
                                   prefix_v.astype(q.dtype), prefix_mask, scale=self.scale)
        return self.o_proj(out), cache


class Qwen2MLP(nnx.Module):
    """down_proj(silu(gate_proj(x)) * up_proj(x)), no biases."""

    def __init__(self, config: TextConfig, *, rngs: nnx.Rngs, dtype, param_dtype):
        hidden, inner = config.hidden_size, config.intermediate_size
        kw = dict(use_bias=False, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.gate_proj = linear(hidden, inner, ("embed", "mlp"), **kw)
        self.up_proj = linear(hidden, inner, ("embed", "mlp"), **kw)
        self.down_proj = linear(inner, hidden, ("mlp", "embed"), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [batch, seq, hidden] -> [batch, seq, hidden]."""
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Qwen2DecoderLayer(nnx.Module):
    """x + attn(RMSNorm(x)) * r, then x + mlp(RMSNorm(x)) * r (r = `residual_multiplier`)."""

    def __init__(
        self,
        config: TextConfig,
        *,
        rngs: nnx.Rngs,
        dtype,
        param_dtype,
        qkv_bias: bool = True,
        attention_scale: float | None = None,
        residual_multiplier: float = 1.0,
    ):
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.residual_multiplier = float(residual_multiplier)
        self.self_attn = Qwen2Attention(
            config, rngs=rngs, qkv_bias=qkv_bias, scale=attention_scale, **kw
        )
        self.mlp = Qwen2MLP(config, rngs=rngs, **kw)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, **kw)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, **kw)

    def __call__(
        self,
        x: jax.Array,
        cos: jax.Array,
        sin: jax.Array,
        mask: jax.Array,
        cache: KVCache | None = None,
        layer_index: int = 0,
        cache_index: jax.Array | int = 0,
        prefix: SharedPrefix | None = None,
    ) -> tuple[jax.Array, KVCache | None]:
        """See `Qwen2Attention.__call__`; returns ([batch, seq, hidden], cache)."""
        attn, cache = self.self_attn(
            self.input_layernorm(x), cos, sin, mask, cache, layer_index, cache_index, prefix
        )
        x = x + attn * self.residual_multiplier
        return x + self.mlp(self.post_attention_layernorm(x)) * self.residual_multiplier, cache


def decoder_mask(key_mask: jax.Array, seq: int, cache_index: jax.Array | int = 0) -> jax.Array:
    """Causal and padding mask [batch, seq, keys] bool: query i (slot cache_index + i) may attend to
    key slot j iff j <= cache_index + i and key_mask[b, j] (key_mask [batch, keys])."""
    query_slots = cache_index + jnp.arange(seq)
    key_slots = jnp.arange(key_mask.shape[1])
    causal = key_slots[None, :] <= query_slots[:, None]
    return causal[None, :, :] & key_mask.astype(bool)[:, None, :]


def run_layers(
    lm: nnx.Module,
    x: jax.Array,
    positions: jax.Array,
    key_mask: jax.Array,
    cache: KVCache | None,
    cache_index: jax.Array | int,
    prefix: SharedPrefix | None = None,
) -> tuple[jax.Array, KVCache | None]:
    """The decoder layers of `lm` (a `Qwen2LM`) on x [batch, seq, hidden] -> (x, cache): remat in
    cache-free passes when `lm.remat`, one scan when `lm.scan_layers`; ValueError when key_mask does
    not cover seq (no cache) or the cache's max_length slots."""
    seq = x.shape[1]
    if cache is None and key_mask.shape[1] != seq:
        raise ValueError(
            f"without a cache key_mask must cover the {seq} input positions, "
            f"got shape {key_mask.shape}"
        )
    if cache is not None and key_mask.shape[1] != cache.max_length:
        raise ValueError(
            f"with a cache key_mask must cover its {cache.max_length} slots, "
            f"got shape {key_mask.shape}"
        )
    cos, sin = rope_cos_sin(positions, lm.config.head_dim, lm.config.rope_theta, lm.dtype)
    mask = decoder_mask(key_mask, seq, cache_index)
    if lm.scan_layers:
        return scan_layers(lm.layers.scanned(), x, cos, sin, mask, cache, cache_index, prefix,
                           lm.remat)
    for i, layer in enumerate(lm.layers):
        if lm.remat and cache is None:
            x = remat_layer(layer, x, cos, sin, mask, i, prefix)
        else:
            x, cache = layer(x, cos, sin, mask, cache, i, cache_index, prefix)
    return x, cache


class Qwen2LM(StackedStorage, nnx.Module):
    """Token embeddings, decoder layers (`StackedStorage`), final norm and LM head (tied or not);
    `qkv_bias`, `attention_scale` and `residual_multiplier` go to every layer."""

    def __init__(
        self,
        config: TextConfig,
        *,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        qkv_bias: bool = True,
        attention_scale: float | None = None,
        residual_multiplier: float = 1.0,
    ):
        self.config = config
        self.dtype = dtype
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.embed_tokens = nnx.Embed(
            config.vocab_size,
            config.hidden_size,
            embedding_init=normal_init(("vocab", "embed")),
            rngs=rngs,
            **kw,
        )
        self.remat = False  # see sallm_jax.models.remat
        layer_options = dict(
            qkv_bias=qkv_bias,
            attention_scale=attention_scale,
            residual_multiplier=residual_multiplier,
        )
        self.layers = nnx.List(
            [
                Qwen2DecoderLayer(config, rngs=rngs, **layer_options, **kw)
                for _ in range(config.num_hidden_layers)
            ]
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, **kw)
        if config.tie_word_embeddings:
            self.lm_head = None
        else:
            self.lm_head = linear(
                config.hidden_size,
                config.vocab_size,
                ("embed", "vocab"),
                use_bias=False,
                rngs=rngs,
                **kw,
            )

    def embed(self, input_ids: jax.Array) -> jax.Array:
        """input_ids [batch, seq] int -> [batch, seq, hidden] in the compute dtype."""
        return self.embed_tokens(input_ids)

    def logits(self, hidden: jax.Array) -> jax.Array:
        """Final-normed hidden states [batch, seq, hidden] -> float32 logits [batch, seq, vocab]."""
        if self.lm_head is None:
            kernel = self.embed_tokens.embedding[...].T
        else:
            kernel = self.lm_head.kernel[...]
        # float32 accumulation and output: log-probs for GRPO ratios need the precision.
        return vocab_logits(hidden.astype(self.dtype), kernel.astype(self.dtype))

    def __call__(
        self,
        inputs_embeds: jax.Array,
        positions: jax.Array,
        key_mask: jax.Array,
        cache: KVCache | None = None,
        cache_index: jax.Array | int = 0,
        last_only: bool = False,
        prefix: SharedPrefix | None = None,
    ) -> tuple[jax.Array, KVCache | None]:
        """Decoder on embeddings -> (float32 logits [batch, seq or 1 with last_only, vocab], cache
        or None), the contract of `SpeechLMForward.forward_embeds`."""
        x, cache = run_layers(self, inputs_embeds.astype(self.dtype), positions, key_mask, cache,
                              cache_index, prefix)
        if last_only:
            x = x[:, -1:]
        return self.logits(self.norm(x)), cache
