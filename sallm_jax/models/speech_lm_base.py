"""The `SpeechLM` protocol that training and RL code is typed against, and the forward it shares.

A family's model provides `audio_features`, `encode_audio`, `embed` and a `language_model` taking
`forward_embeds`'s arguments; the `SpeechLMForward` mixin adds `encode_batch_audio`, `prefill`,
`forward_embeds` and `__call__`.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import jax.numpy as jnp

from sallm_jax.models.kv_cache import KVCache, SharedPrefix, init_cache


class SpeechLM(Protocol):
    """A speech-aware LM of any registered family, as training, RL and evaluation use it."""

    config: Any  # the family's config: .text (the decoder's sizes), .audio_token_id
    language_model: Any  # the decoder: .embed(ids), .logits(hidden states)

    def audio_features(self, waveforms: jax.Array,
                       num_samples: jax.Array) -> tuple[jax.Array, jax.Array]: ...

    def encode_audio(self, features: jax.Array, feature_lengths: jax.Array) -> jax.Array: ...

    def embed(self, input_ids: jax.Array,
              audio_embeds: jax.Array | None = None) -> jax.Array: ...

    def encode_batch_audio(self, batch: dict[str, jax.Array]) -> jax.Array | None: ...

    def prefill(self, batch: dict[str, jax.Array],
                audio_embeds: jax.Array | None = None) -> tuple[jax.Array, SharedPrefix]: ...

    def forward_embeds(self, inputs_embeds: jax.Array, positions: jax.Array,
                       key_mask: jax.Array, cache: KVCache | None = None,
                       cache_index: jax.Array | int = 0, last_only: bool = False,
                       prefix: SharedPrefix | None = None,
                       ) -> tuple[jax.Array, KVCache | None]: ...


def check_audio_token_id(config) -> None:
    """ValueError unless config.audio_token_id is an id of config.text's vocabulary."""
    if not 0 <= config.audio_token_id < config.text.vocab_size:
        raise ValueError(f"audio_token_id={config.audio_token_id} lies outside the vocabulary "
                         f"(text.vocab_size={config.text.vocab_size})")


def positions_from_mask(mask: jax.Array) -> jax.Array:
    """RoPE positions [B, S] for a padded mask [B, S]: 0 at each row's first real token, so
    left padding does not shift them."""
    return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0)


def scatter_audio(embeds: jax.Array, is_audio: jax.Array, audio_embeds: jax.Array) -> jax.Array:
    """Token embeddings [B, S, H] with row b's k-th audio placeholder (is_audio [B, S]) replaced by
    audio_embeds[b, k] ([B, N, H])."""
    # Running count of placeholders = index of the audio row each placeholder takes; clipping
    # keeps the gather in range for the non-audio positions, which `where` discards.
    index = jnp.clip(jnp.cumsum(is_audio, axis=1) - 1, 0, audio_embeds.shape[1] - 1)
    gathered = jnp.take_along_axis(audio_embeds, index[..., None], axis=1)
    return jnp.where(is_audio[..., None], gathered.astype(embeds.dtype), embeds)


class SpeechLMForward:
    """`forward_embeds`, `__call__`, `encode_batch_audio` and `prefill`, shared by the families."""

    def encode_batch_audio(self, batch: dict[str, jax.Array]) -> jax.Array | None:
        """Audio embeddings [B, N, H] of a batch's zero-padded 16 kHz clips ("waveforms" [B, W],
        "num_samples" [B]), or None for a batch of text-only prompts (no "waveforms")."""
        if "waveforms" not in batch:
            return None
        return self.encode_audio(*self.audio_features(batch["waveforms"],
                                                      batch["num_samples"]))

    def prefill(self, batch: dict[str, jax.Array],
                audio_embeds: jax.Array | None = None) -> tuple[jax.Array, SharedPrefix]:
        """Encodes a batch's audio and runs each prompt through the decoder once.

        batch: "prompt_ids" [B, P] (left-padded), "prompt_mask" [B, P], and "waveforms" [B, W] /
        "num_samples" [B] unless text only; `audio_embeds`: its `encode_batch_audio` when known.
        Returns float32 logits of each prompt's last position [B, vocab] and the prompts' keys and
        values as the `SharedPrefix` of the rows that continue them.
        """
        prompt_ids, prompt_mask = batch["prompt_ids"], batch["prompt_mask"].astype(bool)
        if audio_embeds is None:
            audio_embeds = self.encode_batch_audio(batch)
        embeds = self.embed(prompt_ids, audio_embeds)
        cache = init_cache(self.config.text, *prompt_ids.shape, embeds.dtype)
        logits, cache = self.forward_embeds(embeds, positions_from_mask(prompt_mask),
                                            prompt_mask, cache, jnp.int32(0), last_only=True)
        return logits[:, -1], SharedPrefix(cache, prompt_mask)

    def forward_embeds(
        self,
        inputs_embeds: jax.Array,
        positions: jax.Array,
        key_mask: jax.Array,
        cache: KVCache | None = None,
        cache_index: jax.Array | int = 0,
        last_only: bool = False,
        prefix: SharedPrefix | None = None,
    ) -> tuple[jax.Array, KVCache | None]:
        """Decoder forward on embeddings, optionally through a KV cache.

        Args:
          inputs_embeds: [batch, seq, hidden] (from `embed`).
          positions: [batch, seq] int32 RoPE positions (`positions_from_mask`).
          key_mask: [batch, keys] bool; keys = seq without a cache, cache.max_length with one.
          cache: KVCache or None; the new keys/values go to slots [cache_index, cache_index + seq).
          cache_index: int32 scalar; query i (slot cache_index + i) attends to slot j iff
            j <= cache_index + i and key_mask[b, j].
          last_only: project only the last position onto the vocabulary (a prefill).
          prefix: SharedPrefix (batch = its prompts x G) or None; each query also attends to its
            prompt's unmasked keys, which precede all others; positions must continue the prompt's.

        Returns float32 logits [batch, seq (1 with last_only), vocab] and the updated cache (or
        None).
        """
        return self.language_model(inputs_embeds, positions, key_mask, cache, cache_index,
                                   last_only, prefix)

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        features: jax.Array | None = None,
        feature_lengths: jax.Array | None = None,
    ) -> jax.Array:
        """Full forward without a cache -> float32 logits [batch, seq, vocab].

        input_ids [batch, seq] int32 with audio placeholders expanded; attention_mask [batch, seq]
        (1 = token; left or right padding); features [batch, frames, feature size]
        (`audio_features`) with feature_lengths [batch] int32 (ValueError without), or None.
        """
        audio_embeds = None
        if features is not None:
            if feature_lengths is None:
                raise ValueError("features were given without feature_lengths")
            audio_embeds = self.encode_audio(features, feature_lengths)
        inputs_embeds = self.embed(input_ids, audio_embeds)
        logits, _ = self.forward_embeds(inputs_embeds, positions_from_mask(attention_mask),
                                        attention_mask.astype(bool))
        return logits
