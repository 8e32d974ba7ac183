"""TRL's two sequence-level loss types against NumPy restatements of their published formulas,
values and gradients, with one hand-computed case each: LUSPO (arXiv 2602.05261, GSPO with
each sequence's loss scaled by its length) and VESPO (arXiv 2602.10693, the gamma kernel on
the sequence importance weight), and VESPO's use of the rollout correction's weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sallm_jax.configs.base import base_config

from sallm_jax.rl.grpo import grpo_loss
from sallm_jax.rl.loss_settings import LossSettings
from sallm_jax.run.validate import validate_config

RNG = np.random.default_rng(5)
LOGP = RNG.normal(-1.5, 0.5, (6, 7)).astype(np.float32)
OLD = (LOGP + RNG.normal(0, 0.15, (6, 7))).astype(np.float32)
ADV = np.array([1.2, -0.7, 0.4, -1.5, -0.3, 0.9], np.float32)
MASK = np.ones((6, 7), np.float32)
MASK[2, 4:] = 0
MASK[4, 2:] = 0
EPS, EPS_HIGH = 0.2, 0.28
VESPO = dict(vespo_k_pos=2.0, vespo_lambda_pos=3.0, vespo_k_neg=3.0, vespo_lambda_neg=2.0)


def loss(logp, old=OLD, adv=ADV, mask=MASK, rollout_logp=None, **keys):
    """The loss under the `grpo` keys `keys`, with the clip range (EPS, EPS_HIGH)."""
    settings = LossSettings.from_section({"epsilon": EPS, "epsilon_high": EPS_HIGH, **keys})
    return grpo_loss(jnp.asarray(logp), jnp.asarray(old), None, jnp.asarray(adv),
                     jnp.asarray(mask), settings, rollout_logp=rollout_logp)


def grad(logp, **kw):
    return np.asarray(jax.grad(lambda lp: loss(lp, **kw)[0])(jnp.asarray(logp)))


# LUSPO (TRL's loss_type="luspo"): s_i = exp(mean_t log pi_theta / pi_old) (GSPO's ratio),
# J = 1/N sum_i |o_i| min(s_i A_i, clip(s_i, 1 - eps, 1 + eps_high) A_i).
LUSPO = dict(loss_type="luspo", importance_sampling_level="sequence", loss_aggregation="grpo")


def numpy_luspo(logp, old, adv, mask):
    """(loss, d loss / d logp): the sequence term's gradient in each token's log-prob is
    -A s / |o_i| where unclipped, so the length cancels: -A s / N per token."""
    length = mask.sum(-1)
    s = np.exp(((logp - old) * mask).sum(-1) / length)
    unclipped, clipped = s * adv, np.clip(s, 1 - EPS, 1 + EPS_HIGH) * adv
    value = (length * -np.minimum(unclipped, clipped)).mean()
    d = np.where(unclipped <= clipped, -adv * s, 0.0)[:, None] * mask / len(adv)
    return value, d


def test_luspo_values_and_gradients():
    # Sequences 0 and 1 drift past the clip range (on the side their advantage clips).
    old = OLD + np.array([-0.4, 0.4, 0.0, 0.1, 0.0, 0.05], np.float32)[:, None]
    value, d = numpy_luspo(LOGP, old, ADV, MASK)
    np.testing.assert_allclose(loss(LOGP, old=old, **LUSPO)[0], value, rtol=1e-5)
    np.testing.assert_allclose(grad(LOGP, old=old, **LUSPO), d, rtol=1e-5, atol=1e-8)
    assert (d == 0).all(-1).any() and (d != 0).any()  # some sequences clipped, some not


def test_luspo_hand_computed():
    """Two sequences: log ratios (0.1, 0.1) with A = 1 (s = e^0.1 = 1.105171, unclipped,
    term -1.105171, length 2) and (-0.5) of one token with A = -1 (s = e^-0.5 = 0.606531,
    clipped at 0.8: term 0.8, no gradient). Loss (2 x -1.105171 + 0.8) / 2 = -0.705171;
    gradient -A s / N = -0.552585 on each token of the first."""
    old = np.full((2, 2), -1.0, np.float32)
    logp = old + np.array([[0.1, 0.1], [-0.5, 0.0]], np.float32)
    kw = dict(old=old, adv=np.array([1.0, -1.0], np.float32),
              mask=np.array([[1, 1], [1, 0]], np.float32), **LUSPO)
    assert float(loss(logp, **kw)[0]) == pytest.approx(-0.705171, abs=1e-6)
    np.testing.assert_allclose(grad(logp, **kw), [[-0.552585, -0.552585], [0, 0]], atol=1e-6)


# VESPO (TRL's loss_type="vespo"): W_i = pi_theta(o_i) / pi_old(o_i) = exp(sum_t log ratio),
# phi(W) = W^k exp(lambda (1 - W)) (phi(1) = 1), k, lambda = k_pos, lambda_pos where A >= 0,
# else k_neg, lambda_neg; per token -sg(phi(W_i)) A_i log pi_theta.


def numpy_vespo(logp, old, adv, mask, log_weights=None):
    log_w = ((logp - old) * mask).sum(-1)
    if log_weights is not None:  # the rollout correction's, folded into W
        log_w = log_w + (np.clip(log_weights, np.log(1e-8), 20.0) * mask).sum(-1)
    log_w = np.clip(log_w, np.log(1e-8), 20.0)
    k = np.where(adv >= 0, VESPO["vespo_k_pos"], VESPO["vespo_k_neg"])
    lam = np.where(adv >= 0, VESPO["vespo_lambda_pos"], VESPO["vespo_lambda_neg"])
    phi = (np.exp(log_w) ** k * np.exp(lam * (1 - np.exp(log_w))))[:, None]
    per_token = -phi * adv[:, None] * logp
    return ((per_token * mask).sum() / mask.sum(),
            -phi * adv[:, None] * mask / mask.sum())


def test_vespo_values_and_gradients():
    value, d = numpy_vespo(LOGP, OLD, ADV, MASK)
    np.testing.assert_allclose(loss(LOGP, loss_type="vespo", **VESPO)[0], value, rtol=1e-5)
    np.testing.assert_allclose(grad(LOGP, loss_type="vespo", **VESPO), d, rtol=1e-5,
                               atol=1e-8)
    # On-policy (W = 1, phi = 1) its gradient is REINFORCE's, GRPO's on-policy gradient.
    np.testing.assert_allclose(grad(LOGP, old=LOGP, loss_type="vespo", **VESPO),
                               grad(LOGP, old=LOGP), rtol=1e-5, atol=1e-8)


def test_vespo_hand_computed():
    """Two sequences of two tokens, log pi_theta = (-1, -2): W = 2 with A = 1 (k 2, lambda 3:
    phi = 4 e^-3 = 0.199148) and W = 0.5 with A = -1 (k 3, lambda 2: phi = e / 8 = 0.339785).
    Loss = (0.199148 x 3 - 0.339785 x 3) / 4 = -0.105478; gradient -phi A / 4:
    -0.049787 on the first's tokens, 0.084946 on the second's."""
    logp = np.array([[-1.0, -2.0], [-1.0, -2.0]], np.float32)
    old = logp - np.array([[np.log(2.0), 0.0], [0.0, -np.log(2.0)]], np.float32)
    kw = dict(old=old, adv=np.array([1.0, -1.0], np.float32), mask=np.ones((2, 2), np.float32),
              loss_type="vespo", **VESPO)
    value, metrics = loss(logp, **kw)
    assert float(value) == pytest.approx(-0.105478, abs=1e-6)
    np.testing.assert_allclose(grad(logp, **kw), [[-0.049787] * 2, [0.084946] * 2], atol=1e-6)
    # TRL's vespo/phi_seq_mean; here over the tokens, as the other ratio statistics
    assert float(metrics["vespo/phi_mean"]) == pytest.approx((0.199148 + 0.339785) / 2,
                                                             abs=1e-6)


def test_vespo_folds_the_rollout_weights_into_its_sequence_weight():
    """With the rollout correction (token modes) VESPO multiplies W by the product of the
    token weights instead of weighing the tokens afterwards (TRL's); a masked token (weight
    0) takes the floor 1e-8, so its sequence leaves the loss."""
    weights = np.exp(RNG.normal(0, 0.1, (6, 7))).astype(np.float32)
    weights[1, 3] = 0.0
    with np.errstate(divide="ignore"):
        value, d = numpy_vespo(LOGP, OLD, ADV, MASK, np.log(weights))
    # The sampler's log-probs whose token-level correction (no bounds) gives these weights.
    with np.errstate(divide="ignore"):
        rollout = jnp.asarray(OLD - np.log(weights))
    kw = dict(loss_type="vespo", rollout_correction="token_truncate", rollout_correction_min=0.0,
              rollout_correction_max=0.0, rollout_logp=rollout, **VESPO)
    np.testing.assert_allclose(loss(LOGP, **kw)[0], value, rtol=1e-5)
    np.testing.assert_allclose(grad(LOGP, **kw), d, rtol=1e-5, atol=1e-8)
    assert np.abs(d[1]).max() < 1e-20  # W ~ 1e-8: phi ~ 1e-24


def test_option_checks():
    good = base_config()
    good.grpo.loss_type, good.grpo.importance_sampling_level = "luspo", "sequence"
    good.grpo.loss_aggregation = "grpo"
    validate_config(good)
    good = base_config()
    good.grpo.loss_type, good.grpo.rollout_correction = "vespo", "token_mask"
    validate_config(good)
    for key, value, settings in [
            ("importance_sampling_level", "token", {"loss_type": "luspo",
                                                    "loss_aggregation": "grpo"}),
            ("loss_aggregation", "dapo", {"loss_type": "luspo",
                                          "importance_sampling_level": "sequence"}),
            ("importance_sampling_level", "sequence", {"loss_type": "vespo"}),
            ("rollout_correction", "sequence_mask", {"loss_type": "vespo"}),
            ("vespo_lambda_neg", 0.0, {"loss_type": "vespo"}),
            ("vespo_k_pos", -1.0, {"loss_type": "vespo"})]:
        bad = base_config()
        bad.grpo.update(settings)
        bad.grpo[key] = value
        with pytest.raises(ValueError, match=rf"grpo\.{key}"):
            validate_config(bad)
