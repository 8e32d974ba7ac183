"""Entropy from the log-prob pass, the top-entropy token selection and the entropy bonus,
against a hand-computed case and NumPy restatements (values and gradients)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sallm_jax.configs.base import base_config

from sallm_jax.rl.grpo import grpo_loss, high_entropy_mask
from sallm_jax.rl.loss_settings import LossSettings
from sallm_jax.rl.policy import token_logprobs_and_entropy
from sallm_jax.run.validate import validate_config

RNG = np.random.default_rng(1)
N, C, V = 3, 4, 7
LOGITS = RNG.normal(0, 2.0, (N, C, V)).astype(np.float32)
IDS = RNG.integers(0, V, (N, C)).astype(np.int32)
ADV = np.array([0.8, -1.1, 0.3], np.float32)
MASK = np.ones((N, C), np.float32)
MASK[2, 2:] = 0


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_entropy_and_logprobs_from_one_log_softmax():
    logp, entropy = token_logprobs_and_entropy(jnp.asarray(LOGITS), jnp.asarray(IDS))
    p = np_softmax(LOGITS.astype(np.float64))
    np.testing.assert_allclose(logp, np.log(np.take_along_axis(p, IDS[..., None], -1)[..., 0]),
                               rtol=1e-5)
    np.testing.assert_allclose(entropy, -(p * np.log(p)).sum(-1), rtol=1e-5)
    # dH/dz_v = -p_v (log p_v + H).
    grad = jax.grad(lambda z: token_logprobs_and_entropy(z, jnp.asarray(IDS))[1][0, 0])(
        jnp.asarray(LOGITS))
    h = -(p[0, 0] * np.log(p[0, 0])).sum()
    np.testing.assert_allclose(grad[0, 0], -p[0, 0] * (np.log(p[0, 0]) + h), rtol=1e-4,
                               atol=1e-6)
    assert not np.asarray(grad)[1:].any()


def test_high_entropy_mask_hand_computed():
    entropy = jnp.array([[0.1, 0.9, 0.5, 0.3], [0.7, 0.2, 5.0, 6.0]])
    mask = jnp.array([[1, 1, 1, 1], [1, 1, 0, 0]])
    # The six entropies under the mask, sorted: 0.1 0.2 0.3 0.5 0.7 0.9; their median is
    # (0.3 + 0.5) / 2 = 0.4, so the top half is 0.9, 0.5 and 0.7. The padding (5.0, 6.0) is
    # neither counted in the quantile nor kept.
    np.testing.assert_array_equal(high_entropy_mask(entropy, mask, 0.5),
                                  [[False, True, True, False], [True, False, False, False]])
    # The top third: the 2/3 quantile is 0.5 + (0.7 - 0.5) * (10/3 - 3) = 0.5667: 0.9 and 0.7.
    np.testing.assert_array_equal(high_entropy_mask(entropy, mask, 1 / 3),
                                  [[False, True, False, False], [True, False, False, False]])
    assert bool(high_entropy_mask(entropy, mask, 1.0).sum() == 6)


def test_top_entropy_quantile_loss_and_gradient_against_numpy():
    q = 0.4
    logp_np, entropy_np = (np.asarray(x) for x in token_logprobs_and_entropy(
        jnp.asarray(LOGITS), jnp.asarray(IDS)))
    old = (logp_np + RNG.normal(0, 0.4, logp_np.shape)).astype(np.float32)

    def loss(lp):
        return grpo_loss(lp, jnp.asarray(old), None, jnp.asarray(ADV), jnp.asarray(MASK),
                         LossSettings.from_section({"epsilon": 0.2, "top_entropy_quantile": q}),
                         entropy=jnp.asarray(entropy_np))

    value, metrics = loss(jnp.asarray(logp_np))
    threshold = np.quantile(entropy_np[MASK > 0], 1 - q)
    keep = (entropy_np >= threshold) & (MASK > 0)
    ratio = np.exp(logp_np - old)
    a = ADV[:, None]
    clipped = -np.minimum(ratio * a, np.clip(ratio, 0.8, 1.2) * a)
    np.testing.assert_allclose(value, (clipped * keep).sum() / MASK.sum(), rtol=1e-5)
    np.testing.assert_allclose(metrics["entropy_kept_fraction"], keep.sum() / MASK.sum())
    # d/dlogp: -r A on kept tokens where the clip does not bind, 0 elsewhere (dropped tokens
    # included), over the count of all completion tokens.
    binds = np.clip(ratio, 0.8, 1.2) * a < ratio * a
    expected = np.where(keep & ~binds, -ratio * a, 0.0) / MASK.sum()
    grad = jax.grad(lambda lp: loss(lp)[0])(jnp.asarray(logp_np))
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-8)


def test_entropy_bonus_value_and_gradient_through_the_logits():
    coef = 0.3

    def loss(z):
        logp, entropy = token_logprobs_and_entropy(z, jnp.asarray(IDS))
        return grpo_loss(logp, jax.lax.stop_gradient(logp), None, jnp.asarray(ADV),
                         jnp.asarray(MASK), LossSettings(entropy_coef=coef), entropy=entropy)[0]

    p = np_softmax(LOGITS.astype(np.float64))
    h = -(p * np.log(p)).sum(-1)
    n = MASK.sum()
    # On-policy (ratio 1): loss = sum over tokens of (-A - coef H) / n.
    expected = ((-ADV[:, None] - coef * h) * MASK).sum() / n
    np.testing.assert_allclose(loss(jnp.asarray(LOGITS)), expected, rtol=1e-5)
    # d/dz = (-A (onehot - p) + coef p (log p + H)) mask / n.
    onehot = np.eye(V)[IDS]
    grad_np = (-ADV[:, None, None] * (onehot - p)
               + coef * p * (np.log(p) + h[..., None])) * MASK[..., None] / n
    np.testing.assert_allclose(jax.grad(loss)(jnp.asarray(LOGITS)), grad_np, rtol=1e-4,
                               atol=1e-7)


def test_defaults_leave_the_loss_unchanged_and_keys_are_validated():
    logp = jnp.asarray(RNG.normal(-1, 0.3, (N, C)).astype(np.float32))
    old = logp + 0.1
    plain = grpo_loss(logp, old, None, jnp.asarray(ADV), jnp.asarray(MASK))
    with_entropy = grpo_loss(logp, old, None, jnp.asarray(ADV), jnp.asarray(MASK),
                             entropy=jnp.ones((N, C)))
    assert float(plain[0]) == float(with_entropy[0])
    with pytest.raises(ValueError, match="entropy"):
        grpo_loss(logp, old, None, jnp.asarray(ADV), jnp.asarray(MASK),
                  LossSettings(entropy_coef=0.1))
    for key, value in [("top_entropy_quantile", 0.0), ("top_entropy_quantile", 1.5),
                       ("entropy_coef", float("nan")), ("warn_logp_diff_above", -1.0)]:
        bad = base_config()
        bad.grpo[key] = value
        with pytest.raises(ValueError, match=rf"grpo\.{key}"):
            validate_config(bad)
