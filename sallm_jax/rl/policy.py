"""Log-probabilities of completions under a speech-aware LM, for the GRPO and SFT losses.

Rows are laid out prompt-major: completion row b * group + g belongs to prompt b. Audio is
encoded and each prompt run through the decoder once; the group's completions all attend to
that one copy of its keys and values, the same layout the sampler produces (a mismatch here
silently pairs completions with the wrong audio).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sallm_jax.models.lora import set_lora_enabled
from sallm_jax.models.speech_lm_base import SpeechLM, positions_from_mask


def merge_policy(graphdef: nnx.GraphDef, params: nnx.State, frozen: nnx.State,
                 *, adapters: bool = True) -> SpeechLM:
    """The model from its trained and frozen state; `adapters=False` switches LoRA off (the
    reference policy of a LoRA run: the base weights, without a second copy)."""
    model = nnx.merge(graphdef, params, frozen)
    if not adapters:
        set_lora_enabled(model, False)
    return model


def token_logprobs_and_entropy(logits: jax.Array,
                               ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """log pi(ids) and the entropy of pi, both from one log-softmax over the vocabulary.

    Args:
      logits: [N, C, V] logits already divided by the temperature.
      ids: [N, C] int32 tokens.
    Returns:
      ([N, C] float32 log-probabilities of `ids`, [N, C] float32 entropies
      H = -sum_v pi_v log pi_v of each position's distribution).
    """
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
    """`completion_logprobs` and, from the same forward pass and log-softmax, the policy's
    entropy at each completion position: ([B * group, C], [B * group, C]) float32."""
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
    """log pi(completion token | prompt, audio, earlier tokens).

    Each prompt (with its audio) goes through the decoder once and its keys and values are
    shared by the group's completions (`SharedPrefix`, as in the rollout): a group costs one
    prompt pass plus G completion passes, not G passes over prompt + completion, and holds
    one copy of the prompt's keys and values, not G. Gradients reach the prompt pass through
    the shared keys and values.

    Args:
      batch: "waveforms" [B, W], "num_samples" [B], "prompt_ids" [B, P] (left-padded),
        "prompt_mask" [B, P]; without "waveforms" the prompts are text only.
      completion_ids: [B * group, C] int32 (right-padded).
      completion_mask: [B * group, C] 1 on real completion tokens.
      temperature: logits are divided by it, so the log-probs are those of the sampling policy.
      audio_embeds: the batch's audio embeddings, when the caller has encoded them already.
    Returns:
      [B * group, C] float32 log-probabilities (padding positions hold arbitrary finite values).
    """
    # The unused entropy is dead code to XLA: it costs nothing here.
    return completion_logprobs_and_entropy(model, batch, completion_ids, completion_mask,
                                           group_size=group_size, temperature=temperature,
                                           audio_embeds=audio_embeds)[0]
