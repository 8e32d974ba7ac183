"""The 2026 loss and masking options against NumPy restatements of their published formulas,
values and gradients, with one hand-computed case each: verl's dual-clip (which `grpo.delta`
already is), DeepSeek-V3.2's off-policy sequence masking (TRL's `off_policy_mask_threshold`)
and its bias-corrected KL (TRL's `use_bias_correction_kl`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sallm_jax.configs.base import base_config

from sallm_jax.rl.grpo import grpo_loss, off_policy_sequence_mask
from sallm_jax.rl.loss_settings import LossSettings
from sallm_jax.run.validate import validate_config

RNG = np.random.default_rng(1)
LOGP = RNG.normal(-1.5, 0.5, (6, 7)).astype(np.float32)
OLD = (LOGP + RNG.normal(0, 0.7, (6, 7))).astype(np.float32)  # ratios well away from 1
REF = (LOGP + RNG.normal(0, 0.5, (6, 7))).astype(np.float32)
ADV = np.array([1.2, -0.7, 0.4, -1.5, -0.3, 0.9], np.float32)
MASK = np.ones((6, 7), np.float32)
MASK[2, 4:] = 0
MASK[4, 2:] = 0
EPS, EPS_HIGH = 0.2, 0.28


def clipped_loss_and_grad(ratio, adv, mask):
    """PPO's clipped surrogate per token, -min(r A, clip(r) A), and its derivative in log pi:
    -A r where the unclipped branch is the smaller, 0 where the clip holds it."""
    unclipped, clipped = ratio * adv, np.clip(ratio, 1 - EPS, 1 + EPS_HIGH) * adv
    return -np.minimum(unclipped, clipped), np.where(unclipped <= clipped, -adv * ratio, 0.0)


def token_mean(per_token, mask=MASK):
    """DAPO aggregation: the sum over the batch's completion tokens over their count."""
    return float((per_token * mask).sum() / mask.sum())


def loss(logp, old=OLD, adv=ADV, mask=MASK, ref=None, off_policy=None, **keys):
    """The loss under the `grpo` keys `keys`, with the clip range (EPS, EPS_HIGH)."""
    settings = LossSettings.from_section({"epsilon": EPS, "epsilon_high": EPS_HIGH, **keys})
    return grpo_loss(jnp.asarray(logp), jnp.asarray(old), None if ref is None else
                     jnp.asarray(ref), jnp.asarray(adv), jnp.asarray(mask), settings,
                     off_policy=off_policy)


def grad(logp, **kw):
    return np.asarray(jax.grad(lambda lp: loss(lp, **kw)[0])(jnp.asarray(logp)))


# Dual-clip PPO (Ye et al. 2020, arXiv 1912.09729; verl's core_algos compute_policy_loss):
# L1 = max(-r A, -clip(r, 1 - eps, 1 + eps_high) A); where A < 0, L = min(L1, -c A).


def dual_clip_loss_and_grad(ratio, adv, c):
    l1 = np.maximum(-ratio * adv, -np.clip(ratio, 1 - EPS, 1 + EPS_HIGH) * adv)
    per_token = np.where(adv < 0, np.minimum(l1, -c * adv), l1)
    # the gradient flows only where -r A is the value: not clipped, not capped at -c A
    active = np.isclose(per_token, -ratio * adv)
    return per_token, np.where(active, -adv * ratio, 0.0)


def test_dual_clip_is_delta_values_and_gradients():
    c = 1.6  # >= 1 + eps_high: the range where dual-clip and two-sided clipping coincide
    ratio = np.exp(LOGP - OLD)
    per_token, d_logp = dual_clip_loss_and_grad(ratio, ADV[:, None], c)
    assert ((ratio > c) & (ADV[:, None] < 0) & (MASK > 0)).any()  # the cap binds somewhere
    value, metrics = loss(LOGP, delta=c)
    np.testing.assert_allclose(value, token_mean(per_token), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grad(LOGP, delta=c), d_logp * MASK / MASK.sum(), rtol=1e-5,
                               atol=1e-8)
    # the tokens held by the clip or the cap are those reported cut
    np.testing.assert_allclose(metrics["clip_fraction"], token_mean(d_logp == 0), rtol=1e-6)


def test_dual_clip_hand_computed():
    """One sequence, A = -1, ratios 4 and 2, c = 3: the first token's loss is capped at
    -c A = 3 (no gradient), the second's is -r A = 2 (gradient r / 2 = 1 in its log-prob,
    the mean over 2 tokens). Loss (3 + 2) / 2 = 2.5."""
    logp = np.zeros((1, 2), np.float32)
    old = -np.log(np.array([[4.0, 2.0]], np.float32))
    kw = dict(old=old, adv=np.array([-1.0], np.float32), mask=np.ones((1, 2), np.float32),
              delta=3.0)
    value, _ = loss(logp, **kw)
    assert float(value) == pytest.approx(2.5, rel=1e-6)
    np.testing.assert_allclose(grad(logp, **kw), [[0.0, 1.0]], rtol=1e-6, atol=1e-7)


# Off-policy sequence masking (DeepSeek-V3.2, arXiv 2512.02556, eq. 9): M_i = 0 when A_i < 0
# and (1 / |o_i|) sum_t log(pi_old / pi_theta)(o_i,t) > delta, else 1; the policy term of
# sequence i is multiplied by M_i.


def numpy_sequence_mask(logp, old, adv, mask, threshold):
    mean_drift = ((old - logp) * mask).sum(-1) / np.maximum(mask.sum(-1), 1)
    return np.where((adv < 0) & (mean_drift > threshold), 0.0, 1.0)[:, None]


def test_off_policy_mask_values_and_gradients():
    threshold = 0.1
    keep = numpy_sequence_mask(LOGP, OLD, ADV, MASK, threshold)
    assert 0 < keep.sum() < len(ADV) and (keep[ADV < 0] == 1).any()  # some of each
    np.testing.assert_array_equal(
        off_policy_sequence_mask(jnp.asarray(LOGP), jnp.asarray(OLD), jnp.asarray(ADV),
                                 jnp.asarray(MASK), threshold), keep)
    per_token, d_logp = clipped_loss_and_grad(np.exp(LOGP - OLD), ADV[:, None], MASK)
    value, metrics = loss(LOGP, off_policy_mask_threshold=threshold)
    np.testing.assert_allclose(value, token_mean(keep * per_token), rtol=1e-6, atol=1e-7)
    # the mask is a constant: the kept sequences keep their gradient, the dropped have none
    np.testing.assert_allclose(grad(LOGP, off_policy_mask_threshold=threshold),
                               keep * d_logp * MASK / MASK.sum(), rtol=1e-5, atol=1e-8)
    assert float(metrics["off_policy_masked_fraction"]) == pytest.approx(1 - keep.mean())


def test_off_policy_mask_hand_computed():
    """Three sequences of two tokens, log pi_theta = -1, log pi_old - log pi_theta = (0.6, 0.4),
    (0.1, 0.1), (0.9, 0.9), A = (-1, -1, 1), threshold 0.3, no clipping (eps = 10): the first
    is dropped (A < 0, mean drift 0.5 > 0.3); the second's drift is small; the third's
    advantage is positive. Loss = (2 e^-0.1 - 2 e^-0.9) / 6 = 0.166089."""
    logp = np.full((3, 2), -1.0, np.float32)
    old = logp + np.array([[0.6, 0.4], [0.1, 0.1], [0.9, 0.9]], np.float32)
    adv, mask = np.array([-1.0, -1.0, 1.0], np.float32), np.ones((3, 2), np.float32)
    value, metrics = grpo_loss(jnp.asarray(logp), jnp.asarray(old), None, jnp.asarray(adv),
                               jnp.asarray(mask),
                               LossSettings.from_section({"epsilon": 10.0, "epsilon_high": 10.0,
                                                          "off_policy_mask_threshold": 0.3}))
    assert float(value) == pytest.approx(0.166089, abs=1e-6)
    assert float(metrics["off_policy_masked_fraction"]) == pytest.approx(1 / 3)


def test_off_policy_mask_leaves_ground_truth_rows():
    """Mixed-policy rows (ground-truth answers) are not samples of pi_old: never dropped."""
    off_policy = np.zeros(6, bool)
    off_policy[4] = True  # A < 0 and far from pi_old: dropped if it were sampled
    assert numpy_sequence_mask(LOGP, OLD, ADV, MASK, 0.1)[4, 0] == 0
    kw = dict(off_policy=jnp.asarray(off_policy))
    masked, _ = loss(LOGP, off_policy_mask_threshold=0.1, **kw)
    expected = numpy_sequence_mask(LOGP, OLD, ADV, MASK, 0.1)
    expected[4] = 1.0
    per_token, _ = clipped_loss_and_grad(np.exp(LOGP - OLD), ADV[:, None], MASK)
    per_token[4] = -np.exp(LOGP[4]) * ADV[4]
    np.testing.assert_allclose(masked, token_mean(expected * per_token), rtol=1e-6, atol=1e-7)


# Bias-corrected KL (DeepSeek-V3.2, arXiv 2512.02556; TRL's use_bias_correction_kl): the k3
# estimate of KL(pi_theta || pi_ref) on samples of pi_old, weighted by r = pi_theta / pi_old:
# r (pi_ref / pi_theta - log(pi_ref / pi_theta) - 1), the gradient through r included.


def test_bias_corrected_kl_values_and_gradients():
    beta = 0.3
    ratio, d = np.exp(LOGP - OLD), REF - LOGP
    k3 = np.exp(d) - d - 1
    policy, d_policy = clipped_loss_and_grad(ratio, ADV[:, None], MASK)
    value, metrics = loss(LOGP, ref=REF, beta=beta, use_bias_correction_kl=True)
    np.testing.assert_allclose(value, token_mean(policy + beta * ratio * k3), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(metrics["kl"], token_mean(ratio * k3), rtol=1e-6)
    # d(r k3)/dlogp = r k3 + r (1 - e^d): r' = r and k3' = 1 - e^d
    d_kl = ratio * k3 + ratio * (1 - np.exp(d))
    np.testing.assert_allclose(
        grad(LOGP, ref=REF, beta=beta, use_bias_correction_kl=True),
        (d_policy + beta * d_kl) * MASK / MASK.sum(), rtol=1e-5, atol=1e-8)


def test_bias_corrected_kl_hand_computed():
    """One token, log pi_theta = -1, log pi_old = -1.2, log pi_ref = -1.5, A = 0, beta = 1:
    k3 = e^-0.5 + 0.5 - 1 = 0.106531, r = e^0.2 = 1.221403, loss r k3 = 0.130117."""
    one = np.ones((1, 1), np.float32)
    kw = dict(old=-1.2 * one, adv=np.zeros(1, np.float32), mask=one, ref=-1.5 * one, beta=1.0)
    corrected, _ = loss(-one, use_bias_correction_kl=True, **kw)
    plain, _ = loss(-one, **kw)
    assert float(corrected) == pytest.approx(0.130117, abs=1e-6)
    assert float(plain) == pytest.approx(0.106531, abs=1e-6)


def test_option_checks():
    validate_config(base_config())  # the defaults: both options off
    for key, value, beta in [("off_policy_mask_threshold", -0.5, 0.02),
                             ("use_bias_correction_kl", True, 0.0)]:
        bad = base_config()
        bad.grpo[key], bad.grpo.beta = value, beta
        with pytest.raises(ValueError, match=rf"grpo\.{key}"):
            validate_config(bad)
