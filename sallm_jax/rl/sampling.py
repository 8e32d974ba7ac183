"""Next-token sampling in transformers' order: repetition penalty, temperature, top-k/p, min-p."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def seen_tokens(ids: jax.Array, mask: jax.Array, vocab: int) -> jax.Array:
    """[batch, vocab] bool: the tokens in each row of `ids` [batch, T] where `mask` is set."""
    rows = jnp.arange(ids.shape[0])[:, None]
    at = jnp.where(mask.astype(bool), ids, vocab)
    return jnp.zeros((ids.shape[0], vocab), bool).at[rows, at].set(True, mode="drop")


def penalise_repetitions(logits: jax.Array, seen: jax.Array, penalty: float) -> jax.Array:
    """transformers' `RepetitionPenaltyLogitsProcessor` (CTRL, Keskar et al. 2019) [batch, vocab].

    `seen` tokens' logits are divided by `penalty` where positive, multiplied where negative."""
    penalised = jnp.where(logits < 0, logits * penalty, logits / penalty)
    return jnp.where(seen, penalised, logits)


def filter_logits(logits: jax.Array, *, top_k: int = 0, top_p: float = 1.0,
                  min_p: float = 0.0) -> jax.Array:
    """[batch, vocab] logits with tokens outside top-k, then top-p, then min-p set to -inf.

    `logits` float32, already divided by the temperature; `top_k` 0, `top_p` 1.0, `min_p` 0.0 keep
    all. top-p always keeps the most likely token; min-p is transformers' `MinPLogitsWarper`
    (arXiv 2407.01082)."""
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
    """[batch] int32: per row, the first index whose cumulative mass exceeds u x the row total.

    `probs` [batch, vocab] >= 0 with positive row totals; `u` [batch] in [0, 1). Two-level search
    over about sqrt(vocab) blocks, O(vocab); a zero-probability entry is never returned."""
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
    """[batch] int32 tokens drawn from [batch, vocab] float32 logits; temperature 0 is greedy.

    Repetition penalty on `seen` [batch, vocab] first (greedy too), then temperature and
    `filter_logits`; drawn by `inverse_cdf`. Excluded tokens are never drawn."""
    if repetition_penalty != 1.0:
        logits = penalise_repetitions(logits, seen, repetition_penalty)
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = filter_logits(logits / temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    probs = jax.nn.softmax(logits, axis=-1)
    return inverse_cdf(probs, jax.random.uniform(rng, probs.shape[:-1], probs.dtype))
