"""Advantage estimators against NumPy restatements of their published formulas (verl's
core_algos.py), one hand-computed case each, the start-up checks, and the registry: an
estimator registered in a test alone drives a GRPO update."""

import jax.numpy as jnp
import numpy as np
import pytest
from sallm_jax.configs.base import base_config

from sallm_jax.rl.advantages import ADVANTAGE_ESTIMATORS
from sallm_jax.run.validate import validate_config

EPS = 1e-4


def numpy_grpo(rewards, lengths, scale):
    """(r_i - mean_group) / (std + 1e-4), the unbiased std of the group or the batch."""
    out = np.zeros_like(rewards, np.float64)
    for b, group in enumerate(rewards.astype(np.float64)):
        out[b] = group - group.mean()
        if scale == "group":
            out[b] /= group.std(ddof=1) + EPS
        elif scale == "batch":
            out[b] /= rewards.astype(np.float64).std(ddof=1) + EPS
    return out


def numpy_rloo(rewards, lengths, scale):
    """r_i minus the mean of the other completions of its group."""
    out = np.zeros_like(rewards, np.float64)
    for b, group in enumerate(rewards.astype(np.float64)):
        for i in range(len(group)):
            out[b, i] = group[i] - np.delete(group, i).mean()
    return out


def numpy_masked_whiten(values, lengths):
    """verl's masked_whiten of each completion's value repeated over its tokens: the token mean
    and the unbiased token variance, (x - mean) / sqrt(var + 1e-8)."""
    tokens = np.repeat(values.reshape(-1).astype(np.float64), lengths.reshape(-1))
    mean, var = tokens.mean(), tokens.var(ddof=1)
    return (values - mean) / np.sqrt(var + 1e-8)


def numpy_reinforce_plus_plus(rewards, lengths, scale):
    return numpy_masked_whiten(rewards, lengths)


def numpy_reinforce_plus_plus_baseline(rewards, lengths, scale):
    return numpy_masked_whiten(rewards - rewards.mean(1, keepdims=True), lengths)


CASES = [
    ("grpo", numpy_grpo, "group"),
    ("grpo", numpy_grpo, "batch"),
    ("grpo", numpy_grpo, "none"),
    ("rloo", numpy_rloo, "none"),
    ("reinforce_plus_plus", numpy_reinforce_plus_plus, "none"),
    ("reinforce_plus_plus_baseline", numpy_reinforce_plus_plus_baseline, "none"),
]


@pytest.mark.parametrize("name, reference, scale", CASES)
def test_estimators_match_numpy(name, reference, scale):
    rng = np.random.default_rng(0)
    rewards = rng.random((5, 4)).astype(np.float32)
    rewards[2] = 0.5  # a group without spread
    lengths = rng.integers(1, 9, (5, 4))
    lengths[1, 3] = 0  # a completion the loss leaves out (a masked truncation)
    got = ADVANTAGE_ESTIMATORS[name](jnp.asarray(rewards), jnp.asarray(lengths), scale=scale)
    np.testing.assert_allclose(got, reference(rewards, lengths, scale), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, rewards, lengths, expected", [
    # mean 0.5, std (ddof 1) 0.5: +-0.5 / (0.5 + 1e-4).
    ("grpo", [[1.0, 0.0, 0.5]], [[1, 1, 1]], [[0.5 / 0.5001, -0.5 / 0.5001, 0.0]]),
    # 1 - (0 + 0.5) / 2, 0 - (1 + 0.5) / 2, 0.5 - (1 + 0) / 2.
    ("rloo", [[1.0, 0.0, 0.5]], [[1, 1, 1]], [[0.75, -0.75, 0.0]]),
    # Tokens 1, 0, 0, 0: mean 0.25, variance (0.75^2 + 3 x 0.25^2) / 3 = 0.25.
    ("reinforce_plus_plus", [[1.0, 0.0]], [[1, 3]], [[1.5, -0.5]]),
    # Centred 0.5, -0.5, 0, 0: mean 0, variance 0.5 / 3; the tied group stays at 0.
    ("reinforce_plus_plus_baseline", [[1.0, 0.0], [3.0, 3.0]], [[1, 1], [1, 1]],
     [[6 ** 0.5 / 2, -(6 ** 0.5) / 2], [0.0, 0.0]]),
])
def test_hand_computed(name, rewards, lengths, expected):
    scale = "group" if name == "grpo" else "none"
    got = ADVANTAGE_ESTIMATORS[name](jnp.asarray(rewards), jnp.asarray(lengths), scale=scale)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_default_is_grpo_and_the_key_is_checked():
    cfg = base_config()
    assert cfg.grpo.advantage_estimator == "grpo"
    cfg.grpo.advantage_estimator = "reinforce"
    with pytest.raises(ValueError, match=r"grpo\.advantage_estimator.*'reinforce_plus_plus'"):
        validate_config(cfg)
    cfg.grpo.advantage_estimator, cfg.grpo.scale_rewards = "rloo", "none"
    validate_config(cfg)
    cfg.grpo.scale_rewards = "group"
    with pytest.raises(ValueError, match=r"grpo\.scale_rewards: expected 'none' with"):
        validate_config(cfg)
    cfg.grpo.scale_rewards, cfg.grpo.multi_reward_normalization = "none", "per_reward"
    with pytest.raises(ValueError, match=r"grpo\.multi_reward_normalization: expected 'sum'"):
        validate_config(cfg)


@pytest.mark.parametrize("key, value", [("grpo.min_p", 1.5), ("grpo.repetition_penalty", 0.0)])
def test_sampling_settings_are_checked(key, value):
    cfg = base_config()
    section, name = key.split(".")
    cfg[section][name] = value
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        validate_config(cfg)


def test_an_estimator_registered_here_drives_the_update(monkeypatch):
    """Registering a function is all it takes: the update's loss at ratio 1 (one update per
    rollout, no KL) is -sum_i A_i n_i / sum_i n_i under dapo, with A the registered
    estimator's (here the raw rewards times 3)."""
    from tests.train.test_microbatch import G, inputs, one_update

    monkeypatch.setitem(ADVANTAGE_ESTIMATORS, "tripled",
                        lambda rewards, lengths, *, scale: 3.0 * rewards)
    batch, group, _ = inputs()
    cfg = base_config().grpo
    cfg.update({"group_size": G, "beta": 0.0, "loss_aggregation": "dapo",
                "advantage_estimator": "tripled"})
    metrics = one_update(cfg, batch, group)
    n = group["mask"].sum(-1)
    expected = -(3.0 * group["rewards"].reshape(-1) * n).sum() / n.sum()
    assert float(metrics["loss"]) == pytest.approx(expected, rel=1e-5)
