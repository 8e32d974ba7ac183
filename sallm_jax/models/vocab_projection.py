"""The projection of hidden states onto the vocabulary, with float32 logits from
compute-dtype operands and a backward pass in the compute dtype.

Autodiff of `einsum(hidden, kernel, preferred_element_type=float32)` multiplies the float32
cotangent of the logits by the bfloat16 kernel, so XLA converts the whole [hidden, vocab] kernel
to float32 for the backward pass (granite_speech_2b's tied embedding: 0.4 GB, live while the
decoder's backward runs). Here the cotangent is cast to the operands' dtype first, as every
other layer's backward pass receives its cotangent in the compute dtype, and both products
accumulate in float32. In float32 nothing changes.
"""

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
