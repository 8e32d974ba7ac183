"""The policy terms beside the clipped surrogate, against NumPy restatements of their formulas:
values, the gradients they are designed to give, and the clip fraction they report."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sallm_jax.configs.base import base_config, gspo

from sallm_jax.rl.grpo import grpo_loss
from sallm_jax.rl.loss_settings import LossSettings
from sallm_jax.run.validate import validate_config

RNG = np.random.default_rng(0)
LOGP = RNG.normal(-1.5, 0.5, (4, 5)).astype(np.float32)
OLD = (LOGP + RNG.normal(0, 0.6, (4, 5))).astype(np.float32)  # ratios well away from 1
ADV = np.array([1.2, -0.7, 0.4, -1.5], np.float32)
MASK = np.ones((4, 5), np.float32)
MASK[2, 3:] = 0


def token_mean(per_token):
    """DAPO aggregation: the mean over the batch's completion tokens."""
    return float((per_token * MASK).sum() / MASK.sum())


def loss(logp, **keys):
    """The loss of `logp` under the `grpo` keys `keys` (the others at their defaults)."""
    return grpo_loss(logp, jnp.asarray(OLD), None, jnp.asarray(ADV), jnp.asarray(MASK),
                     LossSettings.from_section(keys))


def test_cispo_value_and_stop_gradient_weight():
    cap = 1.5
    ratio = np.exp(LOGP - OLD)
    weight = np.minimum(ratio, cap)
    value, metrics = loss(jnp.asarray(LOGP), loss_type="cispo", epsilon_high=cap)
    np.testing.assert_allclose(value, token_mean(-weight * ADV[:, None] * LOGP), rtol=1e-6)
    # d/dlogp of -sg(w) A logp is -w A: the weight carries no gradient of its own.
    grad = jax.grad(lambda lp: loss(lp, loss_type="cispo", epsilon_high=cap)[0])(
        jnp.asarray(LOGP))
    np.testing.assert_allclose(grad, -weight * ADV[:, None] * MASK / MASK.sum(), rtol=1e-5)
    np.testing.assert_allclose(metrics["clip_fraction"], token_mean(ratio > cap), rtol=1e-6)


def test_sapo_value_and_gradient():
    tau_pos, tau_neg = 1.0, 1.05
    ratio = np.exp(LOGP - OLD)
    tau = np.where(ADV[:, None] > 0, tau_pos, tau_neg)
    sigmoid = 1 / (1 + np.exp(-tau * (ratio - 1)))
    value, metrics = loss(jnp.asarray(LOGP), loss_type="sapo")
    np.testing.assert_allclose(value, token_mean(-sigmoid * 4 / tau * ADV[:, None]), rtol=1e-6)
    # d/dlogp of -sigmoid(tau (r - 1)) 4 / tau A = -4 sigmoid' r A (r = exp(logp - old)).
    grad = jax.grad(lambda lp: loss(lp, loss_type="sapo")[0])(jnp.asarray(LOGP))
    expected = -4 * sigmoid * (1 - sigmoid) * ratio * ADV[:, None] * MASK / MASK.sum()
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-8)
    assert float(metrics["clip_fraction"]) == 0.0


def test_sapo_on_policy_gradient_equals_grpo():
    """f'(1) = 1: at ratio 1 the soft gate passes GRPO's gradient unchanged."""
    def on_policy(loss_type):
        return jax.grad(lambda lp: grpo_loss(lp, jax.lax.stop_gradient(lp), None,
                                             jnp.asarray(ADV), jnp.asarray(MASK),
                                             LossSettings(loss_type=loss_type))[0])(
            jnp.asarray(LOGP))

    np.testing.assert_allclose(on_policy("sapo"), on_policy("grpo"), rtol=1e-6)


def test_delta_caps_the_unclipped_ratio():
    eps, eps_high, delta = 0.2, 0.28, 1.5
    ratio = np.exp(LOGP - OLD)
    unclipped = np.minimum(ratio, delta) * ADV[:, None]
    clipped = np.clip(ratio, 1 - eps, 1 + eps_high) * ADV[:, None]
    value, _ = loss(jnp.asarray(LOGP), epsilon=eps, epsilon_high=eps_high, delta=delta)
    np.testing.assert_allclose(value, token_mean(-np.minimum(unclipped, clipped)), rtol=1e-6)
    plain, _ = loss(jnp.asarray(LOGP), epsilon=eps, epsilon_high=eps_high)
    assert (ratio > delta)[ADV < 0].any() and float(value) != pytest.approx(float(plain))


def test_gspo_preset_and_loss_type_checks():
    cfg = gspo(base_config())
    assert (cfg.grpo.importance_sampling_level, cfg.grpo.epsilon, cfg.grpo.epsilon_high,
            cfg.grpo.beta) == ("sequence", 3e-4, 4e-4, 0.0)
    validate_config(cfg)
    for key, value, message in [("loss_type", "ppo", r"grpo\.loss_type"),
                                ("delta", 1.1, r"grpo\.delta")]:
        bad = base_config()
        bad.grpo[key] = value
        with pytest.raises(ValueError, match=message):
            validate_config(bad)
    cispo = base_config()
    cispo.grpo.loss_type = "cispo"  # epsilon_high 0.2 would cap every weight below 1
    with pytest.raises(ValueError, match=r"grpo\.epsilon_high.*CISPO"):
        validate_config(cispo)


def test_fraction_of_groups_that_teach_nothing():
    from sallm_jax.rl.scoring import frac_equal_reward_groups

    rewards = np.array([0.5, 0.5, 0.5, 0.1, 0.9, 0.9, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    assert frac_equal_reward_groups(rewards, 3) == 0.75  # groups 1, 3 and 4 of 4 are flat
