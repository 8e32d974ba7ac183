"""Hidden states onto the vocabulary: float32 logits from compute-dtype operands, whose backward
pass casts the cotangent to their dtype (no float32 copy of the [hidden, vocab] kernel)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _logits(hidden: jax.Array, kernel: jax.Array) -> jax.Array:
    return jnp.einsum("bsh,hv->bsv", hidden, kernel, preferred_element_type=jnp.float32)


@jax.custom_vjp
def vocab_logits(hidden: jax.Array, kernel: jax.Array) -> jax.Array:
    """hidden [batch, seq, hidden] and kernel [hidden, vocab], one dtype -> float32 logits
    [batch, seq, vocab]."""
    return _logits(hidden, kernel)


def _forward(hidden, kernel):
    return _logits(hidden, kernel), (hidden, kernel)


def _backward(residuals, cotangent):
    hidden, kernel = residuals
    cotangent = cotangent.astype(hidden.dtype)
    d_hidden = jnp.einsum("bsv,hv->bsh", cotangent, kernel, preferred_element_type=jnp.float32)
    d_kernel = jnp.einsum("bsh,bsv->hv", hidden, cotangent, preferred_element_type=jnp.float32)
    return d_hidden.astype(hidden.dtype), d_kernel.astype(kernel.dtype)


vocab_logits.defvjp(_forward, _backward)
