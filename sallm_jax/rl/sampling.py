"""Next-token sampling: repetition penalty, temperature, top-k, top-p (nucleus), min-p and greedy,
as one pure function, in transformers' order (its `RepetitionPenaltyLogitsProcessor` on the raw
logits, then the warpers temperature, top-k, top-p, min-p)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def seen_tokens(ids: jax.Array, mask: jax.Array, vocab: int) -> jax.Array:
    """[batch, vocab] bool: which tokens occur in each row of ids [batch, T] where mask is set
    (left padding is not a token of the row, as transformers' `prompt_ignore_length`)."""
    rows = jnp.arange(ids.shape[0])[:, None]
    at = jnp.where(mask.astype(bool), ids, vocab)
    return jnp.zeros((ids.shape[0], vocab), bool).at[rows, at].set(True, mode="drop")


def penalise_repetitions(logits: jax.Array, seen: jax.Array, penalty: float) -> jax.Array:
    """transformers' `RepetitionPenaltyLogitsProcessor` (Keskar et al. 2019, CTRL): the logit of
    each token already seen (`seen_tokens`: the prompt and the completion so far), once per
    token however often it occurred, is divided by `penalty` where positive and multiplied by it
    where negative; the others are unchanged. [batch, vocab] -> [batch, vocab]."""
    penalised = jnp.where(logits < 0, logits * penalty, logits / penalty)
    return jnp.where(seen, penalised, logits)


def filter_logits(logits: jax.Array, *, top_k: int = 0, top_p: float = 1.0,
                  min_p: float = 0.0) -> jax.Array:
    """Set the logits outside the top-k / top-p / min-p set to -inf, in that order.

    Args:
      logits: [batch, vocab] float32, already divided by the temperature.
      top_k: keep the k largest logits; 0 keeps all.
      top_p: keep the smallest set of tokens, taken in order of probability, whose mass reaches
        top_p (the most likely token is always kept); 1.0 keeps all.
      min_p: then keep the tokens whose probability (softmax of what top-k / top-p kept) is at
        least min_p x the most likely one's (transformers' `MinPLogitsWarper`, Nguyen et al.
        2024, arXiv 2407.01082); 0.0 keeps all.
    Returns:
      [batch, vocab] logits with the excluded entries at -inf.
    """
    neg_inf = jnp.asarray(-jnp.inf, logits.dtype)
    if top_k and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, neg_inf, logits)
    if top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
        sorted_probs = jax.nn.softmax(sorted_logits, axis=-1)
        # Mass of the tokens more likely than each one: a token stays while that is < top_p.
        mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
        keep_sorted = mass_before < top_p
        cutoff = jnp.min(jnp.where(keep_sorted, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < cutoff, neg_inf, logits)
    if min_p > 0.0:
        probs = jax.nn.softmax(logits, axis=-1)
        logits = jnp.where(probs < min_p * probs.max(axis=-1, keepdims=True), neg_inf, logits)
    return logits


def inverse_cdf(probs: jax.Array, u: jax.Array) -> jax.Array:
    """For each row, the first index whose cumulative mass exceeds u x the row's total.

    Two levels, O(vocab) work: the vocabulary is cut into about sqrt(vocab) blocks; the block
    holding the target comes from the cumulative block sums, then the index from the
    cumulative sum inside that block alone (one full-length prefix sum costs far more on the
    CPU than a sum per block). A zero-probability entry is never returned: the target inside
    the chosen block is clamped below the block's own total and at or above zero, so the entry
    found always adds mass.

    Args:
      probs: [batch, vocab] non-negative, each row with positive total.
      u: [batch] uniform numbers in [0, 1).
    Returns:
      [batch] int32 indices.
    """
    batch, vocab = probs.shape
    block = math.isqrt(vocab - 1) + 1
    num_blocks = -(-vocab // block)
    blocks = jnp.pad(probs, ((0, 0), (0, num_blocks * block - vocab))).reshape(batch, num_blocks,
                                                                              block)
    block_mass = blocks.sum(axis=-1)
    block_cdf = jnp.cumsum(block_mass, axis=-1)
    target = u * block_cdf[:, -1]
    j = jnp.minimum(jnp.sum(block_cdf <= target[:, None], axis=-1), num_blocks - 1)
    inside = jnp.take_along_axis(blocks, j[:, None, None], axis=1)[:, 0]
    inside_cdf = jnp.cumsum(inside, axis=-1)
    mass_before = jnp.take_along_axis(block_cdf - block_mass, j[:, None], axis=1)[:, 0]
    rest = jnp.clip(target - mass_before, 0.0, jnp.nextafter(inside_cdf[:, -1], 0.0))
    k = jnp.sum(inside_cdf <= rest[:, None], axis=-1)
    return (j * block + k).astype(jnp.int32)


def sample_token(
    logits: jax.Array,
    rng: jax.Array,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    repetition_penalty: float = 1.0,
    seen: jax.Array | None = None,
) -> jax.Array:
    """Draw one token per row from [batch, vocab] float32 logits; temperature 0 means greedy.

    With `repetition_penalty` != 1 the logits of the `seen` [batch, vocab] tokens are first
    penalised (`penalise_repetitions`, greedy decoding included, as in transformers); then
    temperature, top-k, top-p and min-p (`filter_logits`) shape the distribution drawn from.
    By inversion of the cumulative distribution (`inverse_cdf`): one uniform number per row
    rather than the vocabulary-sized Gumbel noise of `jax.random.categorical` (the same
    distribution, drawn several times faster in the decode loop). Excluded (zero-probability)
    tokens are never drawn.

    Returns [batch] int32 token ids.
    """
    if repetition_penalty != 1.0:
        logits = penalise_repetitions(logits, seen, repetition_penalty)
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = filter_logits(logits / temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    probs = jax.nn.softmax(logits, axis=-1)
    return inverse_cdf(probs, jax.random.uniform(rng, probs.shape[:-1], probs.dtype))
