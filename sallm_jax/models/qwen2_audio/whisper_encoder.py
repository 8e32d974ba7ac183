"""Whisper-style audio encoder of Qwen2-Audio (`Qwen2AudioEncoder` in transformers).

conv1 (k3, pad 1) -> GELU -> conv2 (k3, stride 2, pad 1) -> GELU -> + learned positions -> pre-LN
transformer layers -> AvgPool1d(2, 2) over time -> LayerNorm; exact (erf) GELU. Keys past a clip's
valid conv frames are masked, as transformers' feature attention mask does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sallm_jax.models.attention import dot_product_attention, normal_init
from sallm_jax.models.layer_scan import StackedStorage, run_layers
from sallm_jax.models.layers import layer_norm, linear
from sallm_jax.models.qwen2_audio.config import AudioEncoderConfig


def conv_output_frames(mel_frames):
    """Frames after conv2 (k3, stride 2, pad 1): L1 = (L - 1) // 2 + 1 (ints or arrays)."""
    return (mel_frames - 1) // 2 + 1


def _gelu(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=False)


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> jax.Array:
    """Whisper's positional table [length, channels]: sines then cosines of position times
    geometrically spaced inverse timescales from 1 to 1 / max_timescale."""
    if channels % 2:
        raise ValueError(f"sinusoids: channels must be even, got {channels}")
    inv_timescales = jnp.exp(-jnp.log(max_timescale) / (channels // 2 - 1)
                             * jnp.arange(channels // 2))
    scaled = jnp.arange(length)[:, None] * inv_timescales[None, :]
    return jnp.concatenate([jnp.sin(scaled), jnp.cos(scaled)], axis=1)


class EncoderAttention(nnx.Module):
    """Bidirectional multi-head self-attention; k_proj has no bias (Whisper layout)."""

    def __init__(self, config: AudioEncoderConfig, *, rngs: nnx.Rngs, dtype, param_dtype):
        d = config.d_model
        self.num_heads = config.encoder_attention_heads
        self.head_dim = d // self.num_heads
        if self.head_dim * self.num_heads != d:
            raise ValueError(
                f"audio.d_model={d} is not divisible by "
                f"audio.encoder_attention_heads={self.num_heads}"
            )
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.q_proj = linear(d, d, ("audio_embed", "heads"), **kw)
        self.k_proj = linear(d, d, ("audio_embed", "heads"), use_bias=False, **kw)
        self.v_proj = linear(d, d, ("audio_embed", "heads"), **kw)
        self.out_proj = linear(d, d, ("heads", "audio_embed"), **kw)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """x [batch, frames, d_model], mask [batch, frames, frames] bool -> like x."""
        batch, frames, _ = x.shape
        shape = (batch, frames, self.num_heads, self.head_dim)
        # transformers scales q (bias included) before QK^T rather than the logits; keep that order.
        q = (self.q_proj(x) * self.head_dim**-0.5).reshape(shape)
        k = self.k_proj(x).reshape(shape)
        v = self.v_proj(x).reshape(shape)
        return self.out_proj(dot_product_attention(q, k, v, mask, scale=1.0))


class EncoderLayer(nnx.Module):
    """Pre-LayerNorm transformer layer: x + attn(LN(x)), then x + fc2(GELU(fc1(LN(x))))."""

    def __init__(self, config: AudioEncoderConfig, *, rngs: nnx.Rngs, dtype, param_dtype):
        d, eps, ffn = config.d_model, config.layer_norm_eps, config.encoder_ffn_dim
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.self_attn = EncoderAttention(config, **kw)
        self.self_attn_layer_norm = layer_norm(d, eps, dtype, param_dtype, rngs)
        self.fc1 = linear(d, ffn, ("audio_embed", "audio_mlp"), **kw)
        self.fc2 = linear(ffn, d, ("audio_mlp", "audio_embed"), **kw)
        self.final_layer_norm = layer_norm(d, eps, dtype, param_dtype, rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """x [batch, frames, d_model], mask [batch, frames, frames] bool -> same shape as x."""
        x = x + self.self_attn(self.self_attn_layer_norm(x), mask)
        return x + self.fc2(_gelu(self.fc1(self.final_layer_norm(x))))


class WhisperEncoder(StackedStorage, nnx.Module):
    """Audio tower: log-mel [batch, frames, mels] -> pooled states [batch, tokens, d_model]."""

    stack_name = "audio encoder"

    def __init__(
        self,
        config: AudioEncoderConfig,
        *,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        self.config = config
        self.dtype = dtype
        d = config.d_model
        self.conv1 = nnx.Conv(
            config.num_mel_bins,
            d,
            kernel_size=(3,),
            padding=((1, 1),),
            dtype=dtype,
            param_dtype=param_dtype,
            kernel_init=normal_init(("conv_kernel", "mel", "audio_embed")),
            rngs=rngs,
        )
        self.conv2 = nnx.Conv(
            d,
            d,
            kernel_size=(3,),
            strides=(2,),
            padding=((1, 1),),
            dtype=dtype,
            param_dtype=param_dtype,
            kernel_init=normal_init(("conv_kernel", None, "audio_embed")),
            rngs=rngs,
        )
        # Whisper's sinusoids, which Qwen2-Audio's encoder holds (transformers keeps the table
        # frozen; a checkpoint's own table replaces this one on loading). A random table would
        # leave a model trained from scratch with no sense of order in its audio.
        self.embed_positions = nnx.Param(
            nnx.with_partitioning(lambda key, shape, dtype: sinusoids(*shape).astype(dtype),
                                  ("pos", "audio_embed"), eager_sharding=False)(
                rngs.params(), (config.max_source_positions, d), param_dtype
            )
        )
        self.layers = nnx.List(
            [
                EncoderLayer(config, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
                for _ in range(config.encoder_layers)
            ]
        )
        self.layer_norm = layer_norm(d, config.layer_norm_eps, dtype, param_dtype, rngs)

    def __call__(self, features: jax.Array, feature_lengths: jax.Array) -> jax.Array:
        """Log-mel [batch, frames, num_mel_bins] -> [batch, audio_token_count(frames), d_model].

        frames <= 2 x max_source_positions, else ValueError; row b of the result is valid up to
        audio_token_count(feature_lengths[b]).
        """
        frames = features.shape[1]
        conv_frames = conv_output_frames(frames)
        if conv_frames > self.config.max_source_positions:
            raise ValueError(
                f"features have {frames} mel frames; the audio encoder accepts at most "
                f"{self.config.max_mel_frames} (2 x audio.max_source_positions="
                f"{self.config.max_source_positions})"
            )
        x = _gelu(self.conv1(features.astype(self.dtype)))
        x = _gelu(self.conv2(x))
        x = x + self.embed_positions[...][:conv_frames].astype(x.dtype)

        valid_keys = jnp.arange(conv_frames)[None, :] < conv_output_frames(feature_lengths)[:, None]
        # Every query (padding ones too) sees the valid keys only, as in transformers.
        mask = jnp.broadcast_to(valid_keys[:, None, :], (x.shape[0], conv_frames, conv_frames))
        x = run_layers(self.layers, x, lambda layer, x, _: layer(x, mask))

        # AvgPool1d(2, 2) drops an odd last frame.
        pooled = conv_frames // 2
        x = x[:, : 2 * pooled].reshape(x.shape[0], pooled, 2, x.shape[-1]).mean(axis=2)
        return self.layer_norm(x)
