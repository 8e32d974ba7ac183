"""Completion log-probs under a speech-aware LM; rows prompt-major (b * group + g: prompt b)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sallm_jax.models.lora import set_lora_enabled
from sallm_jax.models.speech_lm_base import SpeechLM, positions_from_mask


def merge_policy(graphdef: nnx.GraphDef, params: nnx.State, frozen: nnx.State,
                 *, adapters: bool = True) -> SpeechLM:
    """The model from its trained and frozen state; `adapters=False`: LoRA off (the reference)."""
    model = nnx.merge(graphdef, params, frozen)
    if not adapters:
        set_lora_enabled(model, False)
    return model


def token_logprobs_and_entropy(logits: jax.Array,
                               ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """log pi(ids) and entropy -sum_v pi_v log pi_v from one log-softmax: 2 x [N, C] float32.

    `logits` [N, C, V] already divided by the temperature; `ids` [N, C] int32."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    entropy = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    return jnp.take_along_axis(logp, ids[..., None], axis=-1)[..., 0], entropy


def completion_logprobs_and_entropy(
    model: SpeechLM,
    batch: dict[str, jax.Array],
    completion_ids: jax.Array,
    completion_mask: jax.Array,
    *,
    group_size: int = 1,
    temperature: float = 1.0,
    audio_embeds: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """`completion_logprobs` and the entropy, from one pass: two [B * group, C] float32."""
    prompt_logits, prefix = model.prefill(batch, audio_embeds)
    # Completion positions continue each prompt's; their own keys follow its shared ones.
    mask = jnp.concatenate([jnp.repeat(prefix.mask, group_size, axis=0),
                            completion_mask.astype(bool)], axis=1)
    completion_logits, _ = model.forward_embeds(model.embed(completion_ids),
                                                positions_from_mask(mask)[:, prefix.mask.shape[1]:],
                                                completion_mask.astype(bool), prefix=prefix)
    # The prompt's last logit predicts completion token 0; completion token t predicts t + 1.
    logits = jnp.concatenate([jnp.repeat(prompt_logits[:, None], group_size, axis=0),
                              completion_logits[:, :-1]], axis=1) / temperature
    return token_logprobs_and_entropy(logits, completion_ids)


def completion_logprobs(
    model: SpeechLM,
    batch: dict[str, jax.Array],
    completion_ids: jax.Array,
    completion_mask: jax.Array,
    *,
    group_size: int = 1,
    temperature: float = 1.0,
    audio_embeds: jax.Array | None = None,
) -> jax.Array:
    """log pi(completion token | prompt, audio, earlier tokens): [B * group, C] float32.

    `batch` as `rollout` reads it; `completion_ids`, `completion_mask` [B * group, C],
    right-padded; logits divided by `temperature`; `audio_embeds` if already encoded. Each prompt
    runs once, its keys and values shared by its group (`SharedPrefix`). Padding positions hold
    arbitrary finite values."""
    # The unused entropy is dead code to XLA: it costs nothing here.
    return completion_logprobs_and_entropy(model, batch, completion_ids, completion_mask,
                                           group_size=group_size, temperature=temperature,
                                           audio_embeds=audio_embeds)[0]
