"""CTC conformer encoder of Granite Speech (transformers 5.23's `GraniteSpeechCTCEncoder`).

input_linear (input_dim -> D), then `num_layers` blocks
  x += 0.5 * FF1(x); x += Attn(x); x += Conv(x); x += 0.5 * FF2(x); x = LayerNorm(x)
and, after block num_layers // 2 (counting from 1), x += out_mid(softmax(out(x))). Attention is
local to blocks of context_size C: logits (q.k + q.r_ij) * dim_head**-0.5, Shaw embeddings r_ij =
rel_pos_emb[clamp(i - j, -C, C) + max_pos_emb]; a padded last block is masked outside its valid
[T % C, T % C] square. No padding mask: frames past a clip's end count, as in transformers.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sallm_jax.models.attention import MASK_VALUE, normal_init
from sallm_jax.models.granite_speech.config import GraniteEncoderConfig
from sallm_jax.models.layer_scan import StackedStorage, run_layers
from sallm_jax.models.layers import layer_norm, linear


def attention_dists(context_size: int, max_pos_emb: int) -> np.ndarray:
    """[C, C] int rows of `rel_pos_emb` for query i, key j: clamp(i - j, -C, C) + max_pos_emb."""
    seq = np.arange(context_size)
    return np.clip(seq[:, None] - seq[None, :], -context_size, context_size) + max_pos_emb


class InferenceBatchNorm(nnx.Module):
    """BatchNorm1d in inference mode; mean and var are float32 `nnx.BatchStat`s, never trained."""

    def __init__(self, dim: int, eps: float, *, dtype, param_dtype):
        self.eps = eps
        self.dtype = dtype
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((dim,), param_dtype))
        self.mean = nnx.BatchStat(jnp.zeros((dim,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((dim,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [..., dim] channels-last -> same shape, compute dtype."""
        inv = jax.lax.rsqrt(self.var[...] + self.eps) * self.scale[...].astype(jnp.float32)
        y = (x.astype(jnp.float32) - self.mean[...]) * inv + self.bias[...].astype(jnp.float32)
        return y.astype(self.dtype)


class ConformerFeedForward(nnx.Module):
    """LN -> Linear(D, mult * D) -> SiLU -> Linear(mult * D, D), biases on both linears."""

    def __init__(self, config: GraniteEncoderConfig, *, rngs: nnx.Rngs, dtype, param_dtype):
        d, inner = config.hidden_dim, config.hidden_dim * config.feedforward_mult
        kw = dict(use_bias=True, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.pre_norm = layer_norm(d, config.layer_norm_eps, dtype, param_dtype, rngs)
        self.up_proj = linear(d, inner, ("audio_embed", "audio_mlp"), **kw)
        self.down_proj = linear(inner, d, ("audio_mlp", "audio_embed"), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [batch, frames, D] -> [batch, frames, D]."""
        return self.down_proj(jax.nn.silu(self.up_proj(self.pre_norm(x))))


class ConformerAttention(nnx.Module):
    """Block-local multi-head self-attention with Shaw relative-position logits."""

    def __init__(self, config: GraniteEncoderConfig, *, rngs: nnx.Rngs, dtype, param_dtype):
        d = config.hidden_dim
        self.num_heads = config.num_heads
        self.dim_head = config.dim_head
        self.context_size = config.context_size
        inner = self.num_heads * self.dim_head
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.pre_norm = layer_norm(d, config.layer_norm_eps, dtype, param_dtype, rngs)
        self.to_q = linear(d, inner, ("audio_embed", "heads"), use_bias=False, **kw)
        self.to_kv = linear(d, 2 * inner, ("audio_embed", "heads"), use_bias=False, **kw)
        self.to_out = linear(inner, d, ("heads", "audio_embed"), use_bias=True, **kw)
        self.rel_pos_emb = nnx.Embed(
            2 * config.max_pos_emb + 1,
            self.dim_head,
            dtype=dtype,
            param_dtype=param_dtype,
            embedding_init=normal_init(("pos", None)),
            rngs=rngs,
        )
        self.max_pos_emb = config.max_pos_emb

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [batch, frames, D] -> [batch, frames, D] (any frame count; blocks of context_size)."""
        batch, frames, _ = x.shape
        c = self.context_size
        num_blocks = math.ceil(frames / c)
        remainder = frames % c
        x = self.pre_norm(x)
        x = jnp.pad(x, ((0, 0), (0, num_blocks * c - frames), (0, 0)))
        shape = (batch, num_blocks, c, self.num_heads, self.dim_head)
        q = self.to_q(x).reshape(shape)
        k, v = jnp.split(self.to_kv(x), 2, axis=-1)
        k, v = k.reshape(shape), v.reshape(shape)
        dists = attention_dists(c, self.max_pos_emb)
        rel = self.rel_pos_emb(jnp.asarray(dists))  # [c, c, dim_head]
        f32 = jnp.float32
        logits = jnp.einsum("bnqhd,bnkhd->bnhqk", q, k, preferred_element_type=f32)
        logits += jnp.einsum("bnqhd,qkd->bnhqk", q, rel, preferred_element_type=f32)
        logits = logits * self.dim_head**-0.5
        if remainder:
            # Only the last block holds padding; its valid part is the [rem, rem] square.
            block = np.ones((num_blocks, c, c), bool)
            block[-1] = False
            block[-1, :remainder, :remainder] = True
            logits = jnp.where(block[None, :, None], logits, MASK_VALUE)
        probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        out = jnp.einsum("bnhqk,bnkhd->bnqhd", probs, v)
        out = out.reshape(batch, num_blocks * c, self.num_heads * self.dim_head)
        return self.to_out(out[:, :frames])


class ConformerConvModule(nnx.Module):
    """LN -> 1x1 up -> GLU -> depthwise conv (K, padding (K // 2, K // 2 - (K + 1) % 2)) ->
    BatchNorm -> SiLU -> 1x1 down, channels-last."""

    def __init__(self, config: GraniteEncoderConfig, *, rngs: nnx.Rngs, dtype, param_dtype):
        d = config.hidden_dim
        inner = d * config.conv_expansion_factor
        k = config.conv_kernel_size
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm = layer_norm(d, config.layer_norm_eps, dtype, param_dtype, rngs)
        self.up_conv = nnx.Conv(
            d, 2 * inner, kernel_size=(1,),
            kernel_init=normal_init(("conv_kernel", "audio_embed", "audio_mlp")), **kw,
        )  # fmt: skip
        # Asymmetric for even kernels, as transformers' GraniteSpeechConformerDepthWiseConv1d.
        self.depth_conv = nnx.Conv(
            inner, inner, kernel_size=(k,), padding=((k // 2, k // 2 - (k + 1) % 2),),
            feature_group_count=inner, use_bias=False,
            kernel_init=normal_init(("conv_kernel", None, "audio_mlp")), **kw,
        )  # fmt: skip
        self.batch_norm = InferenceBatchNorm(
            inner, config.batch_norm_eps, dtype=dtype, param_dtype=param_dtype
        )
        self.down_conv = nnx.Conv(
            inner, d, kernel_size=(1,),
            kernel_init=normal_init(("conv_kernel", "audio_mlp", "audio_embed")), **kw,
        )  # fmt: skip

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [batch, frames, D] -> [batch, frames, D]."""
        value, gate = jnp.split(self.up_conv(self.norm(x)), 2, axis=-1)
        x = value * jax.nn.sigmoid(gate)  # nn.GLU(dim=1): first half * sigmoid(second half)
        x = jax.nn.silu(self.batch_norm(self.depth_conv(x)))
        return self.down_conv(x)


class ConformerBlock(nnx.Module):
    """Macaron conformer block with a final LayerNorm (`GraniteSpeechConformerBlock`)."""

    def __init__(self, config: GraniteEncoderConfig, *, rngs: nnx.Rngs, dtype, param_dtype):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.ff1 = ConformerFeedForward(config, **kw)
        self.attn = ConformerAttention(config, **kw)
        self.conv = ConformerConvModule(config, **kw)
        self.ff2 = ConformerFeedForward(config, **kw)
        self.post_norm = layer_norm(
            config.hidden_dim, config.layer_norm_eps, dtype, param_dtype, rngs
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [batch, frames, D] -> [batch, frames, D]."""
        x = 0.5 * self.ff1(x) + x
        x = self.attn(x) + x
        x = self.conv(x) + x
        x = 0.5 * self.ff2(x) + x
        return self.post_norm(x)


class GraniteConformerEncoder(StackedStorage, nnx.Module):
    """Stacked frame features [batch, frames, input_dim] -> [batch, frames, hidden_dim]."""

    stack_name = "audio encoder"

    def __init__(
        self,
        config: GraniteEncoderConfig,
        *,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        self.config = config
        self.dtype = dtype
        d = config.hidden_dim
        kw = dict(use_bias=True, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.input_linear = linear(config.input_dim, d, ("mel", "audio_embed"), **kw)
        self.layers = nnx.List(
            [
                ConformerBlock(config, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
                for _ in range(config.num_layers)
            ]
        )
        # CTC head of the self-conditioning step (output_dim = CTC vocabulary) and its way back.
        self.out = linear(d, config.output_dim, ("audio_embed", None), **kw)
        self.out_mid = linear(config.output_dim, d, (None, "audio_embed"), **kw)

    def __call__(self, features: jax.Array) -> jax.Array:
        """[batch, frames, input_dim] -> [batch, frames, hidden_dim] (no padding mask)."""
        x = self.input_linear(features.astype(self.dtype))
        return run_layers(self.layers, x, lambda block, x, index: block(self._condition(x, index)))

    def _condition(self, x: jax.Array, index) -> jax.Array:
        """x, plus the self-conditioning step (CTC softmax mapped back) at block num_layers // 2."""
        mid = self.config.num_layers // 2
        if not mid:
            return x

        def add_ctc(x):
            ctc = jax.nn.softmax(self.out(x).astype(jnp.float32), axis=-1)
            return x + self.out_mid(ctc.astype(self.dtype))

        return jax.lax.cond(index == mid, add_ctc, lambda x: x, x)
