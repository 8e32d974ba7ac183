"""GRPO diagnostics against NumPy restatements: clip fractions by side (TRL's definitions),
the sampler-vs-trainer log-prob gap, completion lengths, and the once-per-stage warning."""

from __future__ import annotations

import logging

import jax.numpy as jnp
import numpy as np

from sallm_jax.rl.diagnostics import LogpDiffWatch, completion_length_range, logp_difference
from sallm_jax.rl.grpo import grpo_loss
from sallm_jax.rl.loss_settings import LossSettings

RNG = np.random.default_rng(2)
LOGP = RNG.normal(-1.5, 0.5, (6, 5)).astype(np.float32)
OLD = (LOGP + RNG.normal(0, 0.5, (6, 5))).astype(np.float32)
ADV = np.array([1.0, -0.5, 0.7, -1.2, 0.0, 0.4], np.float32)
MASK = np.ones((6, 5), np.float32)
MASK[1, 2:] = 0


def test_clip_fractions_by_side():
    eps, eps_high = 0.2, 0.28
    _, metrics = grpo_loss(jnp.asarray(LOGP), jnp.asarray(OLD), None, jnp.asarray(ADV),
                           jnp.asarray(MASK), LossSettings.from_section(
                               {"epsilon": eps, "epsilon_high": eps_high}))
    ratio = np.exp(LOGP - OLD)
    low = (ratio < 1 - eps) & (ADV[:, None] < 0)
    high = (ratio > 1 + eps_high) & (ADV[:, None] > 0)

    def frac(x):
        return (x * MASK).sum() / MASK.sum()

    assert frac(low) > 0 and frac(high) > 0
    np.testing.assert_allclose(metrics["clip_fraction/low"], frac(low), rtol=1e-6)
    np.testing.assert_allclose(metrics["clip_fraction/high"], frac(high), rtol=1e-6)
    np.testing.assert_allclose(metrics["clip_fraction/region"], frac(low | high), rtol=1e-6)
    np.testing.assert_allclose(metrics["clip_fraction"], frac(low | high), rtol=1e-6)


def test_logp_difference_and_length_range():
    sampled = LOGP + RNG.normal(0, 1e-3, LOGP.shape).astype(np.float32)
    sampled[1, 3] = 50.0  # padding: must not count
    out = logp_difference(jnp.asarray(sampled), jnp.asarray(LOGP), jnp.asarray(MASK))
    diff = np.abs(sampled - LOGP)[MASK > 0]
    np.testing.assert_allclose(out["logp_diff/mean"], diff.mean(), rtol=1e-5)
    np.testing.assert_allclose(out["logp_diff/max"], diff.max(), rtol=1e-6)
    stats = completion_length_range(np.array([3, 0, 0, 7, 1, 5]))
    assert stats == {"completion_length/min": 1.0, "completion_length/max": 7.0}


def test_logp_gap_warns_once_per_stage(caplog):
    watch = LogpDiffWatch(0.05)
    with caplog.at_level(logging.WARNING):
        assert not watch.after_step(1, {"logp_diff/mean": np.float32(0.01)})
        assert watch.after_step(2, {"logp_diff/mean": np.float32(0.2), "logp_diff/max": 3.0})
        assert not watch.after_step(3, {"logp_diff/mean": np.float32(0.4)})
    warned = [r for r in caplog.records if "grpo.warn_logp_diff_above" in r.getMessage()]
    assert len(warned) == 1 and "step 2" in warned[0].getMessage()
    assert not LogpDiffWatch(0.0).after_step(1, {"logp_diff/mean": 9.0})
