"""Log-probabilities of completions under a speech-aware LM, for the GRPO and SFT losses.

Rows are laid out prompt-major: completion row b * group + g belongs to prompt b. Audio is
encoded once per prompt and its embeddings repeated `group` times along the batch axis, the same
layout the sampler produces (a mismatch here silently pairs completions with the wrong audio).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sallm_jax.models.lora import set_lora_enabled
from sallm_jax.models.speech_lm import SpeechLM
from sallm_jax.models.speech_lm_base import positions_from_mask


def merge_policy(graphdef: nnx.GraphDef, params: nnx.State, frozen: nnx.State,
                 *, adapters: bool = True) -> SpeechLM:
    """The model from its trained and frozen state; `adapters=False` switches LoRA off (the
    reference policy of a LoRA run: the base weights, without a second copy)."""
    model = nnx.merge(graphdef, params, frozen)
    if not adapters:
        set_lora_enabled(model, False)
    return model


def completion_logprobs(
    model: SpeechLM,
    batch: dict[str, jax.Array],
    completion_ids: jax.Array,
    completion_mask: jax.Array,
    *,
    group_size: int = 1,
    temperature: float = 1.0,
) -> jax.Array:
    """log pi(completion token | prompt, audio, earlier tokens).

    Args:
      batch: "waveforms" [B, W], "num_samples" [B], "prompt_ids" [B, P] (left-padded),
        "prompt_mask" [B, P]; without "waveforms" the prompts are text only.
      completion_ids: [B * group, C] int32 (right-padded).
      completion_mask: [B * group, C] 1 on real completion tokens.
      temperature: logits are divided by it, so the log-probs are those of the sampling policy.
    Returns:
      [B * group, C] float32 log-probabilities (padding positions hold arbitrary finite values).
    """
    audio_embeds = model.encode_batch_audio(batch)
    if audio_embeds is not None:
        audio_embeds = jnp.repeat(audio_embeds, group_size, axis=0)
    prompt_ids = jnp.repeat(batch["prompt_ids"], group_size, axis=0)
    prompt_mask = jnp.repeat(batch["prompt_mask"], group_size, axis=0)
    ids = jnp.concatenate([prompt_ids, completion_ids], axis=1)
    mask = jnp.concatenate([prompt_mask, completion_mask.astype(prompt_mask.dtype)], axis=1)
    embeds = model.embed(ids, audio_embeds)
    logits, _ = model.forward_embeds(embeds, positions_from_mask(mask), mask.astype(bool))
    prompt_len = prompt_ids.shape[1]
    # The logit at position t predicts token t + 1.
    logits = logits[:, prompt_len - 1 : -1] / temperature
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp, completion_ids[..., None], axis=-1)[..., 0]
