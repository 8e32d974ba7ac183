"""The speech-aware LM: Whisper-style audio tower -> linear projector -> Qwen2 decoder.

Numerically equal to transformers' `Qwen2AudioForConditionalGeneration` (see
tests/models/test_speech_lm_parity.py). Audio embeddings replace, in order, the prompt positions
whose id is `config.audio_token_id`; the prompt must already hold one placeholder per audio token
(`audio_token_count(feature_lengths[b])` of them), as the Qwen2-Audio processor expands it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sallm_jax.audio.log_mel import log_mel_spectrogram, num_feature_frames
from sallm_jax.models.layers import linear
from sallm_jax.models.qwen2 import Qwen2LM
from sallm_jax.models.qwen2_audio.config import SpeechLMConfig
from sallm_jax.models.qwen2_audio.whisper_encoder import WhisperEncoder
from sallm_jax.models.speech_lm_base import SpeechLMForward, check_audio_token_id, scatter_audio


class SpeechLM(SpeechLMForward, nnx.Module):
    """Qwen2-Audio layout with the Hugging Face submodule names.

    Attributes:
      audio_tower: WhisperEncoder.
      multi_modal_projector: Linear d_model -> hidden_size (with bias).
      language_model: Qwen2LM (embed_tokens, layers, norm, lm_head).
    """

    def __init__(
        self,
        config: SpeechLMConfig,
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
        """Whisper log-mel features of zero-padded 16 kHz waveforms [batch, samples] and their
        valid frame counts: ([batch, samples // 160, num_mel_bins], [batch] int32)."""
        return (log_mel_spectrogram(waveforms, self.config.audio.num_mel_bins),
                num_feature_frames(num_samples))

    def encode_audio(self, features: jax.Array, feature_lengths: jax.Array) -> jax.Array:
        """Audio embeddings at the LLM width.

        Args:
          features: [batch, frames, num_mel_bins] float32 log-mel, time-major.
          feature_lengths: [batch] int32 valid mel frames per clip.

        Returns:
          [batch, audio_token_count(frames), hidden_size]; rows at and past
          audio_token_count(feature_lengths[b]) are padding that `embed` never reads.
        """
        return self.multi_modal_projector(self.audio_tower(features, feature_lengths))

    def embed(self, input_ids: jax.Array, audio_embeds: jax.Array | None = None) -> jax.Array:
        """Token embeddings with audio placeholders replaced by audio embeddings.

        The k-th position of row b whose id is `audio_token_id` takes audio_embeds[b, k].

        Args:
          input_ids: [batch, seq] int32.
          audio_embeds: [batch, num_audio, hidden] or None (text only).

        Returns:
          [batch, seq, hidden] in the compute dtype.
        """
        embeds = self.language_model.embed(input_ids)
        if audio_embeds is None:
            return embeds
        is_audio = input_ids == self.config.audio_token_id
        return scatter_audio(embeds, is_audio, audio_embeds)
