"""Rollout: sample `group` completions per prompt in one compiled program (`SharedPrefix`)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from sallm_jax.models.kv_cache import init_cache
from sallm_jax.models.layer_scan import compiler_options
from sallm_jax.models.precision import set_compute_dtype
from sallm_jax.models.speech_lm_base import SpeechLM
from sallm_jax.rl.policy import merge_policy
from sallm_jax.rl.sampling import sample_token, seen_tokens

if TYPE_CHECKING:
    from sallm_jax.parallel.partitioner import Partitioner


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How to sample (`sample_token`): temperature 0: greedy; min_p 0, repetition_penalty 1: off."""

    max_new_tokens: int = 32
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0


class Rollout(NamedTuple):
    """Sampled completions, prompt-major: row b * group + g is sample g of prompt b."""

    ids: jax.Array  # [B * group, C] int32, pad after the end-of-sequence token
    mask: jax.Array  # [B * group, C] int32, 1 through the end-of-sequence token
    truncated: jax.Array  # [B * group] bool, no end-of-sequence token within C
    # [B * group, C] float32 log pi(token) under the sampling temperature (before the
    # repetition penalty, top-k, top-p and min-p), from the logits the sampler drew it with: what
    # the trainer's log-probs of the same tokens at the same parameters should equal. None where
    # a caller built a Rollout by hand.
    logp: jax.Array | None = None


def _tile(x: jax.Array, group: int, axis: int = 0) -> jax.Array:
    return jnp.repeat(x, group, axis=axis)


def rollout(
    model: SpeechLM,
    batch: dict[str, jax.Array],
    rng: jax.Array,
    *,
    sampling: SamplingConfig,
    group_size: int,
    eos_ids: tuple[int, ...],
    pad_id: int,
) -> Rollout:
    """Sample `group_size` completions for each prompt of `batch`: a Rollout, C = max_new_tokens.

    `batch`: "waveforms" [B, W] (absent: text only), "num_samples" [B], "prompt_ids" [B, P]
    (left-padded), "prompt_mask" [B, P]. `logp`: log_softmax(logits / T) of each sampled token (T =
    temperature, 1 if greedy), what `completion_logprobs` scores. The repetition penalty counts the
    prompt (no padding) and the completion so far."""
    c = sampling.max_new_tokens
    n = batch["prompt_ids"].shape[0] * group_size
    last_logits, prefix = model.prefill(batch)
    # Each row's own slots follow its prompt; the causal rule keeps the unwritten ones unseen.
    cache = init_cache(model.config.text, n, c, prefix.cache.k.dtype)
    key_mask = jnp.ones((n, c), bool)
    next_position = _tile(prefix.mask.astype(jnp.int32).sum(-1), group_size)
    eos = jnp.asarray(eos_ids, jnp.int32)
    scoring_temperature = sampling.temperature or 1.0
    penalise = sampling.repetition_penalty != 1.0
    vocab = last_logits.shape[-1]
    # Without a penalty no token is tracked: an empty [n, 0] stands in.
    seen = (_tile(seen_tokens(batch["prompt_ids"], batch["prompt_mask"], vocab), group_size)
            if penalise else jnp.zeros((n, 0), bool))

    def cond(state):
        t, _, _, _, _, done, _, _ = state
        return (t < c) & ~jnp.all(done)

    def body(state):
        t, tokens, logps, last_logits, cache, done, seen, rng = state
        rng, step_rng = jax.random.split(rng)
        token = sample_token(last_logits, step_rng, temperature=sampling.temperature,
                             top_k=sampling.top_k, top_p=sampling.top_p, min_p=sampling.min_p,
                             repetition_penalty=sampling.repetition_penalty, seen=seen)
        token = jnp.where(done, pad_id, token)
        tokens = tokens.at[:, t].set(token)
        if penalise:
            seen = seen.at[jnp.arange(n), token].set(True)
        # As the trainer computes it: divide, then the float32 log-softmax.
        step_logp = jax.nn.log_softmax((last_logits / scoring_temperature).astype(jnp.float32),
                                       axis=-1)
        logps = logps.at[:, t].set(jnp.take_along_axis(step_logp, token[:, None], axis=-1)[:, 0])
        done = done | jnp.isin(token, eos)
        step_embeds = model.embed(token[:, None], None)
        step_logits, cache = model.forward_embeds(step_embeds, (next_position + t)[:, None],
                                                  key_mask, cache, t, prefix=prefix)
        return t + 1, tokens, logps, step_logits[:, -1], cache, done, seen, rng

    init = (jnp.int32(0), jnp.full((n, c), pad_id, jnp.int32), jnp.zeros((n, c), jnp.float32),
            _tile(last_logits, group_size), cache, jnp.zeros((n,), bool), seen, rng)
    _, tokens, logps, _, _, _, _, _ = jax.lax.while_loop(cond, body, init)
    is_eos = jnp.isin(tokens, eos)
    # A token counts while no end-of-sequence token came before it; the loop stops early only
    # when every row has ended, so the unwritten tail is always masked.
    ended_before = jnp.cumsum(is_eos, axis=1) - is_eos
    mask = (ended_before == 0).astype(jnp.int32)
    return Rollout(ids=tokens, mask=mask, truncated=~jnp.any(is_eos, axis=1), logp=logps)


def make_rollout_fn(graphdef: nnx.GraphDef, param_shardings: nnx.State,
                    frozen_shardings: nnx.State, partitioner: Partitioner, *,
                    sampling: SamplingConfig, group_size: int, eos_ids: tuple[int, ...],
                    pad_id: int, compute_dtype: str = ""):
    """jit(fn(params, frozen, batch, rng) -> Rollout), sharded along the batch axis.

    `compute_dtype` ("bfloat16", `grpo.rollout_dtype`; "": the model's own) is the sampler's."""

    def fn(params, frozen, batch, rng):
        model = merge_policy(graphdef, params, frozen)
        if compute_dtype:
            set_compute_dtype(model, compute_dtype)
        return rollout(model, batch, rng, sampling=sampling, group_size=group_size,
                       eos_ids=eos_ids, pad_id=pad_id)

    return jax.jit(fn, in_shardings=(param_shardings, frozen_shardings, partitioner.batch,
                                     partitioner.replicated), out_shardings=partitioner.batch,
                   compiler_options=compiler_options())
