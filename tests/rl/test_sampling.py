"""Next-token sampling: greedy, top-k and top-p keep exactly the expected sets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sallm_jax.rl.sampling import filter_logits, inverse_cdf, sample_token

PROBS = np.array([0.05, 0.4, 0.1, 0.3, 0.15])  # sorted: 1 (.4), 3 (.3), 4 (.15), 2 (.1), 0 (.05)


def kept(logits):
    return set(np.nonzero(np.isfinite(np.asarray(logits[0])))[0].tolist())


def test_top_p_keeps_smallest_set_reaching_mass():
    logits = jnp.log(jnp.asarray(PROBS))[None]
    assert kept(filter_logits(logits, top_p=0.4)) == {1}
    assert kept(filter_logits(logits, top_p=0.5)) == {1, 3}
    assert kept(filter_logits(logits, top_p=0.7)) == {1, 3}
    assert kept(filter_logits(logits, top_p=0.71)) == {1, 3, 4}
    assert kept(filter_logits(logits, top_p=0.9)) == {1, 3, 4, 2}
    assert kept(filter_logits(logits, top_p=1.0)) == {0, 1, 2, 3, 4}


def test_top_k_and_greedy():
    logits = jnp.log(jnp.asarray(PROBS))[None]
    assert kept(filter_logits(logits, top_k=2)) == {1, 3}
    assert int(sample_token(logits, jax.random.key(0), temperature=0.0)[0]) == 1


def test_sampling_frequencies_follow_filtered_distribution():
    logits = jnp.tile(jnp.log(jnp.asarray(PROBS))[None], (20000, 1))
    tokens = np.asarray(sample_token(logits, jax.random.key(1), temperature=1.0, top_p=0.71))
    counts = np.bincount(tokens, minlength=5) / len(tokens)
    expected = np.array([0, 0.4, 0, 0.3, 0.15]) / 0.85
    np.testing.assert_allclose(counts, expected, atol=0.015)


def test_large_vocabulary_draws_follow_softmax_and_stay_in_top_k():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(0, 2, (1, 1000)), jnp.float32)
    tokens = np.asarray(sample_token(jnp.tile(logits, (40000, 1)), jax.random.key(2),
                                     temperature=0.7, top_k=20))
    top = np.argsort(np.asarray(logits[0]))[-20:]
    assert set(tokens) <= set(top)
    expected = np.exp(np.asarray(logits[0, top]) / 0.7)
    expected /= expected.sum()
    counts = np.array([(tokens == t).mean() for t in top])
    assert 0.5 * np.abs(counts - expected).sum() < 0.02  # total variation distance


@pytest.mark.parametrize("vocab", [1, 7, 16, 17, 1000])
def test_inverse_cdf_matches_a_full_prefix_sum_search(vocab):
    """Against numpy's searchsorted on the float64 cumulative sum, with zero-mass entries,
    over targets spread across [0, 1)."""
    rng = np.random.default_rng(vocab)
    probs = rng.random((64, vocab)) * (rng.random((64, vocab)) < 0.6)
    probs[np.arange(64), rng.integers(0, vocab, 64)] += 0.5  # every row has mass
    u = np.linspace(0.0, 1.0, 64, endpoint=False)
    got = np.asarray(inverse_cdf(jnp.asarray(probs, jnp.float32), jnp.asarray(u, jnp.float32)))
    cdf = np.cumsum(probs, axis=1)
    target = u * cdf[:, -1]
    want = np.array([np.searchsorted(c, t, side="right")
                     for c, t in zip(cdf, target, strict=True)])
    assert (probs[np.arange(64), got] > 0).all()
    # Where a target lies within float32 rounding of a boundary either side is right.
    clear = np.abs(cdf - target[:, None]).min(axis=1) > 1e-5 * cdf[:, -1]
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(got[clear], want[clear])


def test_inverse_cdf_at_the_top_of_the_unit_interval_stays_on_tokens_with_mass():
    """u just below 1 puts the target at the very end of the last block with mass, where the
    block sums and the prefix sum inside the block round differently; the draw must still land
    on a token with mass, not on the zero-mass tail (a top-k filter leaves most blocks
    empty)."""
    rng = np.random.default_rng(0)
    probs = np.zeros((256, 1000), np.float32)
    probs[:, :20] = rng.random((256, 20)) * (1 + rng.integers(0, 1000, (256, 1)))
    u = np.full(256, np.nextafter(np.float32(1), np.float32(0)))
    got = np.asarray(inverse_cdf(jnp.asarray(probs), jnp.asarray(u)))
    assert (got < 20).all() and (probs[np.arange(256), got] > 0).all()
