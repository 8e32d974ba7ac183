"""Granite Speech: conformer encoder -> windowed Q-Former projector -> Granite decoder.

Matches transformers 5.23's `GraniteSpeechForConditionalGeneration`; implements `SpeechLM`. Row b
must hold `granite_audio_token_count(frames)` `<|audio|>` placeholders, one per valid audio token of
clip b. No padding mask: padding frames influence valid ones, as in transformers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sallm_jax.audio.granite_features import granite_log_mel
from sallm_jax.models.granite_speech.config import GraniteSpeechConfig
from sallm_jax.models.granite_speech.encoder import GraniteConformerEncoder
from sallm_jax.models.granite_speech.lm import GraniteLM
from sallm_jax.models.granite_speech.projector import GraniteProjector
from sallm_jax.models.speech_lm_base import SpeechLMForward, check_audio_token_id, scatter_audio


class GraniteSpeechLM(SpeechLMForward, nnx.Module):
    """Granite Speech with Hugging Face submodule names (encoder, projector, language_model);
    ValueError for an audio_token_id outside the vocabulary or mismatched encoder widths."""

    def __init__(
        self,
        config: GraniteSpeechConfig,
        *,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        check_audio_token_id(config)
        if config.projector.encoder_hidden_size != config.encoder.hidden_dim:
            raise ValueError(
                f"projector_config.encoder_hidden_size={config.projector.encoder_hidden_size} "
                f"differs from encoder_config.hidden_dim={config.encoder.hidden_dim}"
            )
        self.config = config
        self.dtype = dtype
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.encoder = GraniteConformerEncoder(config.encoder, **kw)
        self.projector = GraniteProjector(config, **kw)
        self.language_model = GraniteLM(config.text, **kw)

    def audio_features(self, waveforms: jax.Array,
                       num_samples: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Granite log-mel features [batch, frames, 160] (frame pairs stacked) of zero-padded 16 kHz
        waveforms [batch, samples], and their valid frame counts [batch]."""
        return granite_log_mel(waveforms, num_samples)

    def encode_audio(self, features: jax.Array, feature_lengths: jax.Array) -> jax.Array:
        """Audio embeddings [batch, ceil(frames / window_size) * num_queries, hidden_size] of
        features [batch, frames, 160] (float32 stacked log-mel pairs); `feature_lengths` is unused
        (no padding mask): row b is valid up to granite_audio_token_count(feature_lengths[b])."""
        del feature_lengths  # no padding mask in the Granite encoder or projector
        return self.projector(self.encoder(features))

    def embed(self, input_ids: jax.Array, audio_embeds: jax.Array | None = None) -> jax.Array:
        """Token embeddings [batch, seq, hidden] of input_ids [batch, seq], row b's k-th audio
        placeholder replaced by audio_embeds[b, k] ([batch, num_audio, hidden]; None: text only);
        not yet multiplied by embedding_multiplier (`GraniteLM.__call__` does)."""
        is_audio = input_ids == self.config.audio_token_id
        # transformers looks up id 0 at audio positions (their rows are overwritten anyway).
        embeds = self.language_model.embed(jnp.where(is_audio, 0, input_ids))
        if audio_embeds is None:
            return embeds
        return scatter_audio(embeds, is_audio, audio_embeds)
