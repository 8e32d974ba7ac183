"""`fused_attention` (jax.nn.dot_product_attention, XLA path on CPU) against the project's
einsum attention, alone and inside whole models of both families."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sallm_jax.models.attention import dot_product_attention, fused_attention, set_fused_attention
from tests.models.tiny import FAMILY_TYPES, TINY, forward, padded_batch, random_model


def attention_inputs(dtype):
    """GQA shapes (6 query heads over 2 KV heads), a causal mask behind left padding: row 0's
    first two queries see no key at all."""
    q, k, v = (jax.random.normal(jax.random.key(i), shape, dtype)
               for i, shape in enumerate([(2, 5, 6, 8), (2, 5, 2, 8), (2, 5, 2, 8)]))
    valid = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], bool)
    mask = jnp.tril(jnp.ones((5, 5), bool))[None] & valid[:, None, :]
    return q, k, v, mask


@pytest.mark.parametrize("dtype, atol", [(jnp.float32, 1e-6), (jnp.bfloat16, 2e-2)])
def test_fused_equals_einsum_attention(dtype, atol):
    q, k, v, mask = attention_inputs(dtype)
    ours = dot_product_attention(q, k, v, mask, scale=0.3)
    fused = fused_attention(q, k, v, mask, scale=0.3)
    assert fused.shape == ours.shape == (2, 5, 48) and fused.dtype == dtype
    # Rows whose queries see no key are padding (never read); compare the others.
    seen = np.asarray(mask.any(-1))
    np.testing.assert_allclose(np.asarray(fused, np.float32)[seen],
                               np.asarray(ours, np.float32)[seen], atol=atol, rtol=0)


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_models_with_fused_attention_match_and_train(model_type):
    """`random_model` draws the same weights each call; the batch is left- and right-padded."""
    config = TINY[model_type].config
    reference = random_model(config)
    fused = set_fused_attention(random_model(config), True)
    assert all(m.fused for _, m in nnx.iter_modules(fused) if hasattr(m, "fused"))
    args = padded_batch(model_type)
    valid = np.asarray(args[1], bool)
    np.testing.assert_allclose(np.asarray(forward(fused, *args))[valid],
                               np.asarray(forward(reference, *args))[valid], atol=1e-5, rtol=0)

    def loss(model):
        logits = model(*args)
        return jnp.sum(jax.nn.log_softmax(logits)[..., 0] * args[1])

    grads = nnx.jit(nnx.grad(loss))(fused)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))

