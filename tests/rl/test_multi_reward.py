"""Several rewards: GDPO's per-reward normalisation against a NumPy restatement, async reward
functions awaited together, and None as "not applicable"."""

from __future__ import annotations

import asyncio

import jax.numpy as jnp
import numpy as np
import pytest
from sallm_jax.configs.base import base_config

from sallm_jax.rl.grpo import group_advantages, per_reward_advantages
from sallm_jax.rl.rewards import compute_rewards
from sallm_jax.run.validate import validate_config

EPS = 1e-4


def numpy_gdpo(per_fn: np.ndarray, weights: np.ndarray, scale: str) -> np.ndarray:
    """Liu et al. 2026 (GDPO), one reward and one group at a time, inapplicable (NaN)
    samples out of the statistics and out of the sum."""
    b, g, f = per_fn.shape
    summed = np.zeros((b, g))
    for k in range(f):
        column = per_fn[..., k].astype(np.float64)
        held = column[~np.isnan(column)]
        batch_std = held.std(ddof=1) if held.size > 1 else 0.0
        for i in range(b):
            r = column[i]
            ok = ~np.isnan(r)
            mean = r[ok].mean() if ok.any() else 0.0
            std = r[ok].std(ddof=1) if ok.sum() > 1 else 0.0
            a = np.where(ok, r - mean, 0.0)
            if scale == "group":
                a = a / (std + EPS)
            elif scale == "batch":
                a = a / (batch_std + EPS)
            summed[i] += weights[k] * a
    return (summed - summed.mean()) / (summed.std(ddof=1) + EPS)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_per_reward_advantages_match_numpy(scale):
    rng = np.random.default_rng(0)
    per_fn = np.stack([rng.integers(0, 2, (5, 4)).astype(np.float32),  # accuracy-like
                       rng.random((5, 4)).astype(np.float32) * 0.1], -1)  # a small-scale one
    per_fn[1, 2, 0] = per_fn[3, :3, 1] = np.nan  # not applicable: 3 of 4, one left alone
    weights = np.array([1.0, 0.5], np.float32)
    got = per_reward_advantages(jnp.asarray(per_fn), jnp.asarray(weights), scale)
    np.testing.assert_allclose(got, numpy_gdpo(per_fn, weights, scale), rtol=1e-4, atol=1e-5)


def test_per_reward_keeps_what_the_sum_collapses():
    # Two rewards (accuracy, format) over one group: (1, 0) and (0, 1) have the same sum, so
    # summed GRPO gives them one advantage; accuracy being the rarer (1 of 4 against 2 of 4),
    # GDPO ranks the accurate sample above the merely formatted ones.
    per_fn = np.array([[[1, 0], [0, 1], [0, 1], [0, 0]]], np.float32)
    summed = group_advantages(jnp.asarray(per_fn.sum(-1)))
    assert float(summed[0, 0]) == float(summed[0, 1])
    gdpo = np.asarray(per_reward_advantages(jnp.asarray(per_fn), jnp.ones(2)))
    assert gdpo[0, 0] > gdpo[0, 1]
    np.testing.assert_allclose(gdpo, numpy_gdpo(per_fn, np.ones(2), "group"), rtol=1e-5)


def test_async_rewards_are_awaited_together_and_none_does_not_apply():
    completions = ["a", "b", "c"]
    examples = [{"answer": "a"}] * 3
    in_flight, most = 0, 0

    async def waited(value):
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return value

    async def judge(completion, example):
        if await waited(completion) == "c":
            raise RuntimeError("judge unreachable")
        return None if completion == "b" else 0.8

    async def length(completion, example):
        return await waited(len(completion) / 2)

    def exact(completion, example):
        return None if completion == "c" else float(completion == example["answer"])

    scored = compute_rewards([judge, length, exact], [1.0, 1.0, 2.0], completions, examples,
                             failure_value=-1.0, names=["judge", "length", "exact"])
    assert most == 6  # every call of both async rewards in flight at once
    np.testing.assert_allclose(scored.per_fn, [[0.8, 0.5, 1.0], [np.nan, 0.5, 0.0],
                                               [-1.0, 0.5, np.nan]])
    # None counts as neither a failure nor a zero: it leaves the sum.
    np.testing.assert_allclose(scored.total, [0.8 + 0.5 + 2.0, 0.5, -1.0 + 0.5])
    assert scored.failures == {"judge": 1, "length": 0, "exact": 0}
    assert "unreachable" in str(scored.first_errors["judge"])


def test_async_rewards_inside_a_running_event_loop():
    async def half(completion, example):
        return 0.5

    async def main():
        return compute_rewards([half], [1.0], ["x"], [{"answer": "x"}])

    np.testing.assert_allclose(asyncio.run(main()).total, [0.5])


def test_multi_reward_normalization_is_validated():
    cfg = base_config()
    cfg.grpo.multi_reward_normalization = "per_reward"
    validate_config(cfg)
    cfg.grpo.multi_reward_normalization = "mean"
    with pytest.raises(ValueError, match=r"grpo\.multi_reward_normalization"):
        validate_config(cfg)
