"""Granite Speech: conformer encoder -> windowed Q-Former projector -> Granite decoder.

Numerically equal to transformers 5.23's `GraniteSpeechForConditionalGeneration` (see
tests/models/test_granite_parity.py) and a drop-in for `SpeechLM`: the same public methods with
the same shapes, so rollout and training code run either model unchanged.

Audio placeholders. The Granite processor expands each `<|audio|>` to
`granite_audio_token_count(frames)` = ceil(frames / 15) * 3 copies, where frames are the clip's
valid stacked feature frames ((samples // 160 + 1) // 2). transformers then selects the first that
many projector outputs of each clip with `input_features_mask` [batch, max tokens] and scatters
them, in order, into the placeholder positions. `embed` does the same per row: the k-th
placeholder of row b takes audio_embeds[b, k], so row b must hold exactly as many placeholders
as clip b has valid audio tokens (the padding tokens of a shorter clip are never read).

Unlike Qwen2-Audio, the Granite encoder has no padding mask: `feature_lengths` does not change
the audio embeddings (it is accepted for interface parity); padding frames influence the valid
ones, as they do in transformers for a padded batch.
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
    """Granite Speech with the Hugging Face submodule names.

    Attributes:
      encoder: GraniteConformerEncoder.
      projector: GraniteProjector (query, layernorm, layers, linear).
      language_model: GraniteLM (embed_tokens, layers, norm, lm_head or None when tied).
    """

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
        """Granite log-mel features (frame pairs stacked to 160) of zero-padded 16 kHz
        waveforms [batch, samples] and their valid frame counts."""
        return granite_log_mel(waveforms, num_samples)

    def encode_audio(self, features: jax.Array, feature_lengths: jax.Array) -> jax.Array:
        """Audio embeddings at the LLM width.

        Args:
          features: [batch, frames, 160] float32 stacked log-mel pairs, time-major.
          feature_lengths: [batch] int32 valid frames per clip (unused by the computation, see
            the module docstring; row b is valid up to granite_audio_token_count(lengths[b])).

        Returns:
          [batch, ceil(frames / window_size) * num_queries, hidden_size].
        """
        del feature_lengths  # no padding mask in the Granite encoder or projector
        return self.projector(self.encoder(features))

    def embed(self, input_ids: jax.Array, audio_embeds: jax.Array | None = None) -> jax.Array:
        """Token embeddings with audio placeholders replaced by audio embeddings.

        The k-th position of row b whose id is `audio_token_id` takes audio_embeds[b, k]. The
        result is *not* multiplied by embedding_multiplier: `forward_embeds` does that, for
        audio and text alike, as transformers does after its merge.

        Args:
          input_ids: [batch, seq] int32.
          audio_embeds: [batch, num_audio, hidden] or None (text only).

        Returns:
          [batch, seq, hidden] in the compute dtype.
        """
        is_audio = input_ids == self.config.audio_token_id
        # transformers looks up id 0 at audio positions (their rows are overwritten anyway).
        embeds = self.language_model.embed(jnp.where(is_audio, 0, input_ids))
        if audio_embeds is None:
            return embeds
        return scatter_audio(embeds, is_audio, audio_embeds)
