"""Next-token sampling: temperature, top-k, top-p (nucleus) and greedy, as one pure function."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def filter_logits(logits: jax.Array, *, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
    """Set the logits outside the top-k / top-p set to -inf.

    Args:
      logits: [batch, vocab] float32, already divided by the temperature.
      top_k: keep the k largest logits; 0 keeps all.
      top_p: keep the smallest set of tokens, taken in order of probability, whose mass reaches
        top_p (the most likely token is always kept); 1.0 keeps all.
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
    return logits


def sample_token(
    logits: jax.Array,
    rng: jax.Array,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
) -> jax.Array:
    """Draw one token per row from [batch, vocab] float32 logits; temperature 0 means greedy.

    By inversion of the cumulative distribution: one uniform number per row rather than the
    vocabulary-sized Gumbel noise of `jax.random.categorical` (the same distribution, drawn
    several times faster in the decode loop). The token is the first whose cumulative mass
    exceeds the uniform draw, so excluded (zero-probability) tokens are never drawn.

    Returns [batch] int32 token ids.
    """
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = filter_logits(logits / temperature, top_k=top_k, top_p=top_p)
    cdf = jnp.cumsum(jax.nn.softmax(logits, axis=-1), axis=-1)
    u = jax.random.uniform(rng, cdf.shape[:-1] + (1,), cdf.dtype) * cdf[..., -1:]
    return jnp.sum(cdf <= u, axis=-1).astype(jnp.int32)
