"""Rollout correction for a sampler at another precision (TRL's vLLM importance sampling
correction, its four modes; TIS and MIS as in Yao et al. 2025, "Your efficient RL framework
secretly brings you off-policy RL training"): the weights against a NumPy restatement, values
and gradients of the corrected loss, a hand-computed case, the GRPO update that applies and
logs them, and the rollout at `grpo.rollout_dtype`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from sallm_jax.configs.base import base_config

from sallm_jax.models.qwen2_audio.model import Qwen2AudioLM
from sallm_jax.parallel.mesh import make_mesh
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.rl.grpo import grpo_loss
from sallm_jax.rl.grpo_settings import GRPOSettings
from sallm_jax.rl.loss_settings import LossSettings
from sallm_jax.rl.policy import completion_logprobs
from sallm_jax.rl.rollout import SamplingConfig, make_rollout_fn
from sallm_jax.rl.rollout_correction import (
    ROLLOUT_CORRECTIONS,
    rollout_correction_stats,
    rollout_correction_weights,
)
from sallm_jax.run.validate import validate_config
from sallm_jax.train.grpo_update import make_grpo_update, make_logprob_fn
from sallm_jax.train.state import sharded_train_state
from tests.rl.test_loss_options import numpy_sequence_mask
from tests.train.test_microbatch import CONFIG, G, inputs

RNG = np.random.default_rng(3)
LOGP = RNG.normal(-1.5, 0.5, (6, 7)).astype(np.float32)
OLD = (LOGP + RNG.normal(0, 0.3, (6, 7))).astype(np.float32)
ROLLOUT = (OLD + RNG.normal(0, 0.6, (6, 7))).astype(np.float32)  # the sampler's, far off
ADV = np.array([1.2, -0.7, 0.4, -1.5, -0.3, 0.9], np.float32)
MASK = np.ones((6, 7), np.float32)
MASK[2, 4:] = 0
MASK[4, 2:] = 0
EPS = 0.2


def numpy_weights(old, rollout, mask, mode, lo, hi):
    """TRL's rule, restated: w = pi_old / pi_sampler per token, or per sequence the product over
    its tokens, exp(sum_t (log pi_old - log pi_sampler)); `*_truncate` clips w to [lo, hi],
    `*_mask` sets w to 0 outside it (lo None: no lower bound, hi None: no upper)."""
    diff = (old - rollout) * mask
    w = np.exp(diff.sum(-1, keepdims=True) if mode.startswith("sequence") else diff)
    lo_, hi_ = -np.inf if lo is None else lo, np.inf if hi is None else hi
    outside = (w < lo_) | (w > hi_)
    w = np.clip(w, lo_, hi_) if mode.endswith("truncate") else np.where(outside, 0.0, w)
    return np.broadcast_to(w, old.shape), np.broadcast_to(outside, old.shape)


def clipped_loss_and_grad(ratio, adv):
    unclipped, clipped = ratio * adv, np.clip(ratio, 1 - EPS, 1 + EPS) * adv
    return -np.minimum(unclipped, clipped), np.where(unclipped <= clipped, -adv * ratio, 0.0)


def corrected_loss(logp, rollout, **keys):
    """The loss with the clip range EPS under the `grpo` keys `keys`, the sampler's
    log-probs `rollout`."""
    return grpo_loss(jnp.asarray(logp), jnp.asarray(OLD), None, jnp.asarray(ADV),
                     jnp.asarray(MASK), LossSettings.from_section({"epsilon": EPS, **keys}),
                     rollout_logp=jnp.asarray(rollout))


@pytest.mark.parametrize("mode", ROLLOUT_CORRECTIONS)
@pytest.mark.parametrize("bounds", [(0.5, 2.0), (None, 3.0), (0.8, None)])
def test_weights_loss_and_gradients_against_numpy(mode, bounds):
    lo, hi = bounds
    expected, outside = numpy_weights(OLD, ROLLOUT, MASK, mode, lo, hi)
    weights, out = rollout_correction_weights(jnp.asarray(OLD), jnp.asarray(ROLLOUT),
                                              jnp.asarray(MASK), mode, low=lo, high=hi)
    np.testing.assert_allclose(weights, expected, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(out) & (MASK > 0), outside & (MASK > 0))
    if mode.startswith("token"):
        assert 0 < (outside & (MASK > 0)).sum() < MASK.sum()  # the bounds bind on some
    # The corrected loss: each token's policy term times its (constant) weight.
    per_token, d_logp = clipped_loss_and_grad(np.exp(LOGP - OLD), ADV[:, None])
    correction = dict(rollout_correction=mode, rollout_correction_min=lo or 0.0,
                      rollout_correction_max=hi or 0.0)
    value, _ = corrected_loss(LOGP, ROLLOUT, **correction)
    np.testing.assert_allclose(value, (expected * per_token * MASK).sum() / MASK.sum(),
                               rtol=1e-5, atol=1e-7)
    grad = jax.grad(lambda lp: corrected_loss(lp, ROLLOUT, **correction)[0])(jnp.asarray(LOGP))
    np.testing.assert_allclose(grad, expected * d_logp * MASK / MASK.sum(), rtol=1e-5,
                               atol=1e-8)
    # The statistics: over the sampled tokens (token modes) or sequences (sequence modes).
    stats = rollout_correction_stats(weights, out, jnp.asarray(MASK), mode)
    units = MASK > 0 if mode.startswith("token") else (MASK.sum(-1) > 0)[:, None]
    w, o = (expected[units], outside[units]) if mode.startswith("token") else (
        expected[:, :1][units], outside[:, :1][units])
    np.testing.assert_allclose([stats["rollout_is/mean"], stats["rollout_is/min"],
                                stats["rollout_is/max"], stats["rollout_is/outside_fraction"]],
                               [w.mean(), w.min(), w.max(), o.mean()], rtol=1e-5)


def test_hand_computed():
    """One sequence of two tokens sampled with log-probs log pi_old - (ln 4, -ln 2): token
    ratios 4 and 0.5, sequence ratio 2; bounds [0.6, 3]; A = 1, one update (pi_theta = pi_old,
    per-token term -1). token_truncate: w = (3, 0.6), loss -(3 + 0.6) / 2 = -1.8, gradient
    (-1.5, -0.3); token_mask: w = (0, 0), loss 0; sequence_*: w = 2 on both, loss -2."""
    old = np.full((1, 2), -1.0, np.float32)
    rollout = old - np.log(np.array([[4.0, 0.5]], np.float32))
    mask, adv = np.ones((1, 2), np.float32), np.ones(1, np.float32)
    expected = {"token_truncate": (-1.8, [[-1.5, -0.3]], 1.8, 1.0),
                "token_mask": (0.0, [[0.0, 0.0]], 0.0, 1.0),
                "sequence_truncate": (-2.0, [[-1.0, -1.0]], 2.0, 0.0),
                "sequence_mask": (-2.0, [[-1.0, -1.0]], 2.0, 0.0)}
    for mode, (value, grad, mean, outside) in expected.items():
        weights, out = rollout_correction_weights(jnp.asarray(old), jnp.asarray(rollout),
                                                  jnp.asarray(mask), mode, low=0.6, high=3.0)

        def loss(lp, mode=mode):
            settings = LossSettings(rollout_correction=mode, rollout_correction_min=0.6,
                                    rollout_correction_max=3.0)
            return grpo_loss(lp, jnp.asarray(old), None, jnp.asarray(adv), jnp.asarray(mask),
                             settings, rollout_logp=jnp.asarray(rollout))[0]

        assert float(loss(jnp.asarray(old))) == pytest.approx(value, abs=1e-6), mode
        np.testing.assert_allclose(jax.grad(loss)(jnp.asarray(old)), grad, atol=1e-6)
        stats = rollout_correction_stats(weights, out, jnp.asarray(mask), mode)
        assert float(stats["rollout_is/mean"]) == pytest.approx(mean, abs=1e-6), mode
        assert float(stats["rollout_is/outside_fraction"]) == pytest.approx(outside), mode


def correction_cfg(**settings):
    cfg = base_config().grpo
    cfg.update({"group_size": G, "temperature": 1.0, "beta": 0.0, "num_off_policy": 0,
                "scale_rewards": "group", "rollout_correction": "token_truncate",
                "rollout_correction_min": 0.5, "rollout_correction_max": 1.5, **settings})
    return cfg


def update_at_the_sampler(cfg):
    """One GRPO update of the tiny model at the sampler's parameters, the sampler's log-probs
    the trainer's plus noise: (metrics, the group, the trainer's log-probs)."""
    partitioner = Partitioner(make_mesh({"data": -1}), ())
    graphdef, params, frozen = nnx.split(Qwen2AudioLM(CONFIG, rngs=nnx.Rngs(0)), nnx.Param, ...)
    batch, group, _ = inputs()
    ps = (partitioner.param_shardings(params), partitioner.param_shardings(frozen))
    trainer = np.asarray(make_logprob_fn(graphdef, *ps, partitioner, group_size=G,
                                         temperature=1.0)(
        params, frozen, partitioner.to_global(batch),
        *partitioner.to_global({"i": group["ids"], "m": group["mask"]}).values()))
    rng = np.random.default_rng(4)
    group["rollout_logp"] = (trainer + rng.normal(0, 0.4, trainer.shape)).astype(np.float32)
    state, shardings = sharded_train_state(partitioner, params, optax.sgd(1e-2), copy=True)
    update = make_grpo_update(graphdef, optax.sgd(1e-2), GRPOSettings.from_section(cfg),
                              partitioner, shardings, ps[1])
    _, metrics = update(state, frozen, partitioner.to_global(batch),
                        partitioner.to_global(group), None, None)
    return metrics, group, trainer


@pytest.mark.parametrize("micro", [0, 2])
def test_update_applies_and_logs_the_correction(micro):
    """The GRPO update at the sampler's parameters (ratio 1, so the policy term is -A w):
    its loss is the DAPO mean of -A w, w from the trainer's log-probs of the same parameters
    and the sampler's; its logs are those weights' statistics."""
    metrics, group, trainer = update_at_the_sampler(correction_cfg(micro_batch_size=micro))
    mask = group["mask"].astype(np.float32)
    w, outside = numpy_weights(trainer, group["rollout_logp"], mask, "token_truncate", 0.5, 1.5)
    rewards = group["rewards"].astype(np.float64)
    adv = ((rewards - rewards.mean(1, keepdims=True))
           / (rewards.std(1, ddof=1, keepdims=True) + 1e-4)).reshape(-1, 1)
    assert float(metrics["loss"]) == pytest.approx((-adv * w * mask).sum() / mask.sum(),
                                                   rel=1e-4)
    m = mask > 0
    np.testing.assert_allclose(
        [metrics[f"rollout_is/{k}"] for k in ("mean", "min", "max", "outside_fraction")],
        [w[m].mean(), w[m].min(), w[m].max(), outside[m].mean()], rtol=1e-4)
    assert 0 < float(metrics["rollout_is/outside_fraction"]) < 1


def test_off_policy_mask_reads_the_sampler_log_probs():
    """With the sampler at another precision, its log-probs are those of the policy that drew
    the batch: DeepSeek-V3.2's off-policy sequence mask measures the drift from them (as TRL's
    does from vLLM's), while the ratio stays pi_theta / pi_old."""
    threshold = 0.1
    keep = numpy_sequence_mask(LOGP, ROLLOUT, ADV, MASK, threshold)
    assert (keep != numpy_sequence_mask(LOGP, OLD, ADV, MASK, threshold)).any()
    per_token, d_logp = clipped_loss_and_grad(np.exp(LOGP - OLD), ADV[:, None])
    kw = dict(off_policy_mask_threshold=threshold, rollout_dtype="bfloat16")
    value, metrics = corrected_loss(LOGP, ROLLOUT, **kw)
    np.testing.assert_allclose(value, (keep * per_token * MASK).sum() / MASK.sum(), rtol=1e-5)
    grad = jax.grad(lambda lp: corrected_loss(lp, ROLLOUT, **kw)[0])(jnp.asarray(LOGP))
    np.testing.assert_allclose(grad, keep * d_logp * MASK / MASK.sum(), rtol=1e-5, atol=1e-8)
    assert float(metrics["off_policy_masked_fraction"]) == pytest.approx(1 - keep.mean())


def test_update_masks_by_the_sampler_at_another_precision():
    """In the update (one per batch: pi_old is the update's own log-probs, no drift from
    them) with grpo.rollout_dtype set, the mask reads the sampler's log-probs."""
    metrics, group, trainer = update_at_the_sampler(correction_cfg(
        rollout_correction="", rollout_dtype="bfloat16", off_policy_mask_threshold=0.05))
    rewards = group["rewards"].astype(np.float64)
    adv = (rewards - rewards.mean(1, keepdims=True)).reshape(-1)
    keep = numpy_sequence_mask(trainer, group["rollout_logp"], adv,
                               group["mask"].astype(np.float32), 0.05)
    assert 0 < keep.mean() < 1
    assert float(metrics["off_policy_masked_fraction"]) == pytest.approx(1 - keep.mean())


def test_rollout_at_bfloat16_is_the_bfloat16_model():
    """`compute_dtype="bfloat16"` rolls out the float32 parameters as a model built to compute
    in bfloat16 does (the same tokens and log-probs), and its log-probs differ from the
    float32 trainer's by more than float32 noise."""
    partitioner = Partitioner(make_mesh({"data": -1}), ())
    graphdef, params, frozen = nnx.split(Qwen2AudioLM(CONFIG, rngs=nnx.Rngs(0)), nnx.Param, ...)
    half_def, _, _ = nnx.split(
        Qwen2AudioLM(CONFIG, rngs=nnx.Rngs(0), dtype=jnp.bfloat16, param_dtype=jnp.float32),
        nnx.Param, ...)
    batch = partitioner.to_global(inputs()[0])
    ps = (partitioner.param_shardings(params), partitioner.param_shardings(frozen))
    sampling = SamplingConfig(max_new_tokens=6, temperature=1.0)
    kw = dict(sampling=sampling, group_size=G, eos_ids=(1,), pad_id=0)
    rng = jax.random.key(7)
    mixed = make_rollout_fn(graphdef, *ps, partitioner, compute_dtype="bfloat16", **kw)(
        params, frozen, batch, rng)
    built = make_rollout_fn(half_def, *ps, partitioner, **kw)(params, frozen, batch, rng)
    full = make_rollout_fn(graphdef, *ps, partitioner, **kw)(params, frozen, batch, rng)
    np.testing.assert_array_equal(mixed.ids, built.ids)
    np.testing.assert_array_equal(mixed.logp, built.logp)
    trainer = completion_logprobs(nnx.merge(graphdef, params, frozen), batch, mixed.ids,
                                  mixed.mask, group_size=G)
    m = np.asarray(mixed.mask) > 0
    gap = np.abs(np.asarray(mixed.logp) - np.asarray(trainer))[m]
    assert 1e-4 < gap.max() < 0.5
    full_gap = np.abs(np.asarray(full.logp) - np.asarray(completion_logprobs(
        nnx.merge(graphdef, params, frozen), batch, full.ids, full.mask, group_size=G)))
    assert full_gap[np.asarray(full.mask) > 0].max() < 1e-5


def test_option_checks():
    validate_config(base_config())  # off by default
    good = base_config()
    good.grpo.rollout_dtype, good.grpo.rollout_correction = "bfloat16", "sequence_mask"
    validate_config(good)
    for key, value in [("rollout_dtype", "float16"), ("rollout_correction", "token"),
                       ("rollout_correction_max", 0.9), ("rollout_correction_min", 1.2),
                       ("rollout_correction_min", -0.1)]:
        bad = base_config()
        bad.grpo.rollout_correction = "token_mask"
        bad.grpo[key] = value
        with pytest.raises(ValueError, match=rf"grpo\.{key}"):
            validate_config(bad)
