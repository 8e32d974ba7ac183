"""Advantage estimators by name (`grpo.advantage_estimator`): rewards [B, G] -> advantages [B, G].

`(rewards, lengths, *, scale)`: B prompts x G completions, prompt-major, ground-truth rows
included; `lengths` are token counts in the loss (0: left out); `scale` is `grpo.scale_rewards`,
"none" except with "grpo", the only estimator that allows GDPO's per_reward normalisation."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from sallm_jax.rl.grpo import (
    MULTI_REWARD_NORMALIZATIONS,
    check_scale,
    group_advantages,
    per_reward_advantages,
)
from sallm_jax.rl.settings import check

WHITEN_EPS = 1e-8  # verl's `masked_whiten`: x * rsqrt(var + 1e-8)


def grpo_advantages(rewards: jax.Array, lengths: jax.Array, *, scale: str) -> jax.Array:
    """GRPO (Shao et al. 2024, arXiv 2402.03300; verl's `compute_grpo_outcome_advantage`).

    A = `group_advantages(rewards, scale)`; scale "none" is Dr. GRPO (Liu et al. 2025, arXiv
    2503.20783; verl's `norm_adv_by_std_in_grpo=False`)."""
    return group_advantages(rewards, scale)


def rloo_advantages(rewards: jax.Array, lengths: jax.Array, *, scale: str) -> jax.Array:
    """RLOO (Ahmadian et al. 2024, arXiv 2402.14740; verl's `compute_rloo_outcome_advantage`).

    A_i = r_i - 1/(G - 1) sum_{j != i} r_j = G / (G - 1) (r_i - mean_group r)."""
    g = rewards.shape[-1]
    return (rewards - rewards.mean(-1, keepdims=True)) * (g / (g - 1))


def token_whiten(values: jax.Array, lengths: jax.Array) -> jax.Array:
    """verl's `masked_whiten` of per-completion `values` [B, G] repeated over their tokens.

    (x_i - mu) / sqrt(var + 1e-8), mu = sum_i n_i x_i / N, unbiased var = sum_i n_i (x_i - mu)^2 /
    (N - 1), n_i = `lengths`, N = sum_i n_i, over the whole update batch (every process)."""
    n = lengths.astype(jnp.float32)
    total = n.sum()
    mean = (n * values).sum() / jnp.maximum(total, 1.0)
    var = (n * (values - mean) ** 2).sum() / jnp.maximum(total - 1.0, 1.0)
    return (values - mean) * jax.lax.rsqrt(var + WHITEN_EPS)


def reinforce_plus_plus_advantages(rewards: jax.Array, lengths: jax.Array, *,
                                   scale: str) -> jax.Array:
    """REINFORCE++ (Hu 2025, arXiv 2501.03262): `token_whiten`(r), no group baseline.

    verl's `compute_reinforce_plus_plus_outcome_advantage` with gamma = 1."""
    return token_whiten(rewards, lengths)


def reinforce_plus_plus_baseline_advantages(rewards: jax.Array, lengths: jax.Array, *,
                                            scale: str) -> jax.Array:
    """REINFORCE++-baseline (Hu 2025, arXiv 2501.03262): `token_whiten`(r - mean_group r).

    verl's `compute_reinforce_plus_plus_baseline_outcome_advantage`."""
    return token_whiten(rewards - rewards.mean(-1, keepdims=True), lengths)


ADVANTAGE_ESTIMATORS = {
    "grpo": grpo_advantages,
    "rloo": rloo_advantages,
    "reinforce_plus_plus": reinforce_plus_plus_advantages,
    "reinforce_plus_plus_baseline": reinforce_plus_plus_baseline_advantages,
}


@dataclasses.dataclass(frozen=True)
class AdvantageSettings:
    """The advantages' `grpo` keys; a ConfigError names the first key that cannot work."""

    advantage_estimator: str = "grpo"
    scale_rewards: str = "group"
    multi_reward_normalization: str = "sum"
    reward_weights: tuple[float, ...] = (1.0,)

    def __post_init__(self):
        name = self.advantage_estimator
        check(name in ADVANTAGE_ESTIMATORS, "advantage_estimator",
              f"one of {sorted(ADVANTAGE_ESTIMATORS)}", name)
        check_scale(self.scale_rewards)
        check(self.multi_reward_normalization in MULTI_REWARD_NORMALIZATIONS,
              "multi_reward_normalization", f"one of {MULTI_REWARD_NORMALIZATIONS}",
              self.multi_reward_normalization)
        if name != "grpo":
            check(self.multi_reward_normalization == "sum", "multi_reward_normalization",
                  f"'sum' with grpo.advantage_estimator={name!r} (per_reward is GDPO's own "
                  "estimator, with 'grpo')", self.multi_reward_normalization)
            check(self.scale_rewards == "none", "scale_rewards",
                  f"'none' with grpo.advantage_estimator={name!r} (the std scaling is grpo's; "
                  f"{name} normalises as its paper does)", self.scale_rewards)

    @property
    def per_reward(self) -> bool:
        """Whether each reward function's values are normalised on their own (GDPO)."""
        return self.multi_reward_normalization == "per_reward"


def batch_advantages(settings: AdvantageSettings, rewards: jax.Array, per_fn: jax.Array | None,
                     lengths: jax.Array) -> jax.Array:
    """Advantages [B, G] of `rewards` [B, G], or under per_reward GDPO's of `per_fn` [B, G, F]."""
    if settings.per_reward:
        weights = jnp.asarray(settings.reward_weights, jnp.float32)
        return per_reward_advantages(per_fn, weights, settings.scale_rewards)
    return ADVANTAGE_ESTIMATORS[settings.advantage_estimator](rewards, lengths,
                                                              scale=settings.scale_rewards)
