"""Qwen2-Audio (transformers' `Qwen2AudioForConditionalGeneration`): Whisper-style tower -> linear
projector -> Qwen2 decoder; prompts hold one `config.audio_token_id` placeholder per audio token
(`audio_token_count(feature_lengths[b])`), as the processor expands them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sallm_jax.audio.log_mel import log_mel_spectrogram, num_feature_frames
from sallm_jax.models.layers import linear
from sallm_jax.models.qwen2 import Qwen2LM
from sallm_jax.models.qwen2_audio.config import Qwen2AudioConfig
from sallm_jax.models.qwen2_audio.whisper_encoder import WhisperEncoder
from sallm_jax.models.speech_lm_base import SpeechLMForward, check_audio_token_id, scatter_audio


class Qwen2AudioLM(SpeechLMForward, nnx.Module):
    """Qwen2-Audio with Hugging Face submodule names (audio_tower, multi_modal_projector,
    language_model); ValueError for an audio_token_id outside the vocabulary."""

    def __init__(
        self,
        config: Qwen2AudioConfig,
        *,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        check_audio_token_id(config)
        self.config = config
        self.dtype = dtype
        self.audio_tower = WhisperEncoder(
            config.audio, rngs=rngs, dtype=dtype, param_dtype=param_dtype
        )
        self.multi_modal_projector = linear(
            config.audio.d_model,
            config.text.hidden_size,
            ("audio_embed", "embed"),
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
        )
        self.language_model = Qwen2LM(config.text, rngs=rngs, dtype=dtype, param_dtype=param_dtype)

    def audio_features(self, waveforms: jax.Array,
                       num_samples: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Whisper log-mel features [batch, samples // 160, num_mel_bins] of zero-padded 16 kHz
        waveforms [batch, samples], and the valid frame counts [batch] int32."""
        return (log_mel_spectrogram(waveforms, self.config.audio.num_mel_bins),
                num_feature_frames(num_samples))

    def encode_audio(self, features: jax.Array, feature_lengths: jax.Array) -> jax.Array:
        """Audio embeddings [batch, audio_token_count(frames), hidden_size].

        features: [batch, frames, num_mel_bins] float32 log-mel; row b of the result is valid up to
        audio_token_count(feature_lengths[b]).
        """
        return self.multi_modal_projector(self.audio_tower(features, feature_lengths))

    def embed(self, input_ids: jax.Array, audio_embeds: jax.Array | None = None) -> jax.Array:
        """Token embeddings [batch, seq, hidden] of input_ids [batch, seq], row b's k-th audio
        placeholder replaced by audio_embeds[b, k] ([batch, num_audio, hidden]; None: text only)."""
        embeds = self.language_model.embed(input_ids)
        if audio_embeds is None:
            return embeds
        is_audio = input_ids == self.config.audio_token_id
        return scatter_audio(embeds, is_audio, audio_embeds)
