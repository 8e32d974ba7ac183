"""Attention over a shared prompt prefix against plain attention over each row's own copy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sallm_jax.models.attention import dot_product_attention, prefix_attention

BATCH, GROUP, HEADS, KV_HEADS, DIM, PREFIX, OWN = 3, 4, 4, 2, 8, 6, 5


def _inputs(q_len: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = BATCH * GROUP
    q = rng.normal(size=(rows, q_len, HEADS, DIM))
    k, v = (rng.normal(size=(rows, OWN, KV_HEADS, DIM)) for _ in range(2))
    prefix_k, prefix_v = (rng.normal(size=(BATCH, PREFIX, KV_HEADS, DIM)) for _ in range(2))
    # Left padding of 0, 2 and 5 prompt slots; own keys: causal over a written block, one
    # padding key per row at a random slot.
    prefix_mask = np.arange(PREFIX)[None] >= np.array([0, 2, 5])[:, None]
    causal = np.arange(OWN)[None] <= (OWN - q_len + np.arange(q_len))[:, None]
    own_pad = np.arange(OWN)[None] != rng.integers(0, OWN, rows)[:, None]
    mask = causal[None] & own_pad[:, None]
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    return (f32(q), f32(k), f32(v), jnp.asarray(mask), f32(prefix_k), f32(prefix_v),
            jnp.asarray(prefix_mask))


@pytest.mark.parametrize("q_len", [1, 3])
def test_equals_attention_over_each_rows_own_copy_of_its_prompt(q_len):
    q, k, v, mask, prefix_k, prefix_v, prefix_mask = _inputs(q_len)
    ours = prefix_attention(q, k, v, mask, prefix_k, prefix_v, prefix_mask, scale=0.3)
    tile = lambda x: jnp.repeat(x, GROUP, axis=0)  # noqa: E731
    full_mask = jnp.concatenate(
        [jnp.broadcast_to(tile(prefix_mask)[:, None], (BATCH * GROUP, q_len, PREFIX)), mask],
        axis=-1)
    reference = dot_product_attention(
        q, jnp.concatenate([tile(prefix_k), k], axis=1),
        jnp.concatenate([tile(prefix_v), v], axis=1), full_mask, scale=0.3)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)


def test_each_row_reads_its_own_prompt():
    """Changing prompt 1 changes rows 4..7 (its group) and no other row."""
    q, k, v, mask, prefix_k, prefix_v, prefix_mask = _inputs(1)
    before = prefix_attention(q, k, v, mask, prefix_k, prefix_v, prefix_mask, scale=1.0)
    after = prefix_attention(q, k, v, mask, prefix_k, prefix_v.at[1].add(1.0), prefix_mask,
                             scale=1.0)
    changed = np.abs(np.asarray(after - before)).max(axis=(1, 2)) > 1e-3
    np.testing.assert_array_equal(changed, np.arange(BATCH * GROUP) // GROUP == 1)


def test_gradients_match_attention_over_copies():
    """The shared keys' gradient is the sum over the group of the copies' gradients."""
    q, k, v, mask, prefix_k, prefix_v, prefix_mask = _inputs(3, seed=1)
    tile = lambda x: jnp.repeat(x, GROUP, axis=0)  # noqa: E731
    full_mask = jnp.concatenate(
        [jnp.broadcast_to(tile(prefix_mask)[:, None], (BATCH * GROUP, 3, PREFIX)), mask], -1)

    def ours(pk, pv):
        return jnp.sum(prefix_attention(q, k, v, mask, pk, pv, prefix_mask, scale=0.5) ** 2)

    def reference(pk, pv):
        out = dot_product_attention(q, jnp.concatenate([tile(pk), k], 1),
                                    jnp.concatenate([tile(pv), v], 1), full_mask, scale=0.5)
        return jnp.sum(out**2)

    for got, want in zip(jax.grad(ours, (0, 1))(prefix_k, prefix_v),
                         jax.grad(reference, (0, 1))(prefix_k, prefix_v), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
