"""GRPO advantages and loss against hand-computed values and a NumPy restatement."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sallm_jax.rl.grpo import group_advantages, grpo_loss, k3_kl
from sallm_jax.rl.loss_settings import LossSettings


def settings(**keys):
    """The loss settings of these `grpo` keys, the others at their defaults."""
    return LossSettings.from_section(keys)


def test_group_advantages_hand_computed():
    rewards = jnp.array([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]])
    # Group 0: mean 0.5, unbiased std sqrt(1/3) = 0.57735; group 1: std 0 -> all zero.
    expected0 = np.array([0.5, -0.5, -0.5, 0.5]) / (np.sqrt(1 / 3) + 1e-4)
    got = np.asarray(group_advantages(rewards))
    np.testing.assert_allclose(got[0], expected0, rtol=1e-6)
    np.testing.assert_array_equal(got[1], np.zeros(4))


def test_group_advantages_batch_and_none_scaling():
    rewards = np.array([[1.0, 3.0], [0.0, 4.0]], np.float32)
    centred = np.array([[-1.0, 1.0], [-2.0, 2.0]])
    np.testing.assert_allclose(group_advantages(jnp.asarray(rewards), "none"), centred)
    batch_std = np.std(rewards, ddof=1)
    np.testing.assert_allclose(group_advantages(jnp.asarray(rewards), "batch"),
                               centred / (batch_std + 1e-4), rtol=1e-6)
    with pytest.raises(ValueError, match="scale_rewards"):
        group_advantages(jnp.asarray(rewards), "rank")


def test_k3_hand_computed():
    # logp = log 0.5, ref = log 0.25: exp(-log 2) + log 2 - 1 = 0.5 + 0.693147 - 1
    got = float(k3_kl(jnp.log(0.5), jnp.log(0.25)))
    assert got == pytest.approx(0.5 + np.log(2) - 1, rel=1e-6)


def numpy_grpo_loss(logp, old, ref, adv, mask, eps_low, eps_high, beta):
    ratio = np.exp(logp - old)
    per_token = -np.minimum(ratio * adv[:, None],
                            np.clip(ratio, 1 - eps_low, 1 + eps_high) * adv[:, None])
    delta = ref - logp
    per_token = per_token + beta * (np.exp(delta) - delta - 1)
    return (per_token * mask).sum() / mask.sum()


def test_dapo_loss_matches_numpy_restatement():
    rng = np.random.default_rng(0)
    n, c = 6, 5
    logp = rng.normal(-2, 0.5, (n, c)).astype(np.float32)
    old = logp + rng.normal(0, 0.3, (n, c)).astype(np.float32)
    ref = logp + rng.normal(0, 0.3, (n, c)).astype(np.float32)
    adv = rng.normal(0, 1, n).astype(np.float32)
    mask = (rng.random((n, c)) > 0.3).astype(np.float32)
    loss, metrics = grpo_loss(jnp.asarray(logp), jnp.asarray(old), jnp.asarray(ref),
                              jnp.asarray(adv), jnp.asarray(mask),
                              settings(epsilon=0.2, epsilon_high=0.28, beta=0.04,
                                       loss_aggregation="dapo"))
    expected = numpy_grpo_loss(logp, old, ref, adv, mask, 0.2, 0.28, 0.04)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert 0.0 < float(metrics["clip_fraction"]) < 1.0


def test_ratio_one_gradient_is_advantage_weighted_logprob_gradient():
    # With old = stop_gradient(logp), d loss / d logp = -A / num_tokens on unmasked tokens.
    logp = jnp.array([[-1.0, -2.0, -3.0], [-0.5, -0.7, -0.9]])
    adv = jnp.array([2.0, -1.0])
    mask = jnp.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])

    def f(lp):
        return grpo_loss(lp, jax.lax.stop_gradient(lp), None, adv, mask, settings(beta=0.0))[0]

    grad = np.asarray(jax.grad(f)(logp))
    expected = -np.array([[2.0, 2.0, 0.0], [-1.0, -1.0, -1.0]]) / 5.0
    np.testing.assert_allclose(grad, expected, rtol=1e-6)
    assert float(f(logp)) == pytest.approx(-(2 * 2 - 3) / 5.0)


def test_aggregations_hand_computed():
    logp = jnp.zeros((2, 4))
    adv = jnp.array([1.0, 3.0])
    mask = jnp.array([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    # ratio 1 -> per-token loss = -A.
    values = {agg: float(grpo_loss(logp, logp, None, adv, mask,
                                   settings(loss_aggregation=agg))[0])
              for agg in ("dapo", "grpo", "dr_grpo", "bnpo")}
    assert values["dapo"] == pytest.approx(-(2 * 1 + 4 * 3) / 6)
    assert values["bnpo"] == pytest.approx(values["dapo"])
    assert values["grpo"] == pytest.approx(-(1 + 3) / 2)
    assert values["dr_grpo"] == pytest.approx(-(2 * 1 + 4 * 3) / (2 * 4))
    with pytest.raises(ValueError, match="loss_aggregation"):
        grpo_loss(logp, logp, None, adv, mask, settings(loss_aggregation="mean"))


def test_clipping_stops_gradient_outside_trust_region():
    # Positive advantage and ratio above 1 + eps: the clipped term is smaller, gradient zero.
    old = jnp.log(jnp.array([[0.2]]))
    logp = jnp.log(jnp.array([[0.4]]))  # ratio 2
    grad = jax.grad(lambda lp: grpo_loss(lp, old, None, jnp.array([1.0]),
                                         jnp.ones((1, 1)), settings(epsilon=0.2))[0])(logp)
    assert float(grad[0, 0]) == 0.0
    # Negative advantage at the same ratio: unclipped term is the minimum, gradient = -A * ratio.
    grad = jax.grad(lambda lp: grpo_loss(lp, old, None, jnp.array([-1.0]),
                                         jnp.ones((1, 1)), settings(epsilon=0.2))[0])(logp)
    assert float(grad[0, 0]) == pytest.approx(2.0, rel=1e-5)


def test_off_policy_rows_use_unclipped_pi_theta_ratio():
    # Row 0 on-policy (ratio 1), row 1 off-policy: per-token loss -exp(logp) * A, no clipping
    # even where exp(logp) * A would fall outside the clip range of a ratio.
    logp = jnp.log(jnp.array([[0.5, 0.25], [0.9, 0.6]]))
    adv = jnp.array([1.0, 2.0])
    mask = jnp.ones((2, 2))
    off = jnp.array([False, True])

    def f(lp):
        return grpo_loss(lp, jax.lax.stop_gradient(lp), None, adv, mask, settings(epsilon=0.1),
                         off_policy=off)[0]

    expected_loss = (-1.0 - 1.0 - 2 * 0.9 - 2 * 0.6) / 4
    assert float(f(logp)) == pytest.approx(expected_loss, rel=1e-6)
    grad = np.asarray(jax.grad(f)(logp))
    # d/dlogp of -exp(logp) * A / 4 = -exp(logp) * A / 4 for the off-policy row.
    np.testing.assert_allclose(grad[1], -np.array([0.9, 0.6]) * 2 / 4, rtol=1e-6)
    np.testing.assert_allclose(grad[0], -np.array([1.0, 1.0]) / 4, rtol=1e-6)


def test_sequence_level_ratio_is_geometric_mean_of_token_ratios():
    rng = np.random.default_rng(1)
    logp = rng.normal(-1, 0.2, (3, 4)).astype(np.float32)
    old = logp + rng.normal(0, 0.1, (3, 4)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]], np.float32)
    adv = np.array([1.0, -1.0, 0.5], np.float32)
    seq_ratio = np.exp(((logp - old) * mask).sum(1) / mask.sum(1))
    per_seq = -np.minimum(seq_ratio * adv, np.clip(seq_ratio, 0.8, 1.2) * adv)
    expected = (per_seq[:, None] * mask).sum() / mask.sum()
    loss, _ = grpo_loss(jnp.asarray(logp), jnp.asarray(old), None, jnp.asarray(adv),
                        jnp.asarray(mask), settings(importance_sampling_level="sequence"))
    assert float(loss) == pytest.approx(expected, rel=1e-5)
