"""Advantage estimators: a batch's rewards -> one advantage per completion, registered by name.

An estimator is a pure function `(rewards [B, G], lengths [B, G], *, scale) -> [B, G]`: B
prompts, G completions each (prompt-major), `lengths` each completion's token count in the loss
(its mask's sum; 0 for a completion the loss leaves out), `scale` the `grpo.scale_rewards`
setting. Adding one is a function and its entry in `ADVANTAGE_ESTIMATORS`;
`grpo.advantage_estimator` names the entry (`AdvantageSettings`). Rewards are outcome rewards
(one per completion), so a return is the reward at every token (discount 1).

Mixed-policy groups: the ground-truth rows are members of their group like the sampled ones, in
every estimator: they enter the group mean, the leave-one-out baselines and the batch
statistics (with their own token counts). GDPO (`multi_reward_normalization="per_reward"`)
normalises each reward on its own and is an estimator of its own (`per_reward_advantages`),
so it runs with "grpo" only; `grpo.scale_rewards` is grpo's setting, "none" with the others
(`AdvantageSettings` refuses the other combinations).
"""

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
    """GRPO (Shao et al. 2024, arXiv 2402.03300; verl's `compute_grpo_outcome_advantage`):
    A_i = (r_i - mean_group r) / (std_group r + 1e-4), the std as `scale` says
    (`group_advantages`). With scale "none" this is Dr. GRPO's unscaled A_i = r_i - mean_group r
    (Liu et al. 2025, arXiv 2503.20783; verl's `norm_adv_by_std_in_grpo=False`)."""
    return group_advantages(rewards, scale)


def rloo_advantages(rewards: jax.Array, lengths: jax.Array, *, scale: str) -> jax.Array:
    """RLOO (Ahmadian et al. 2024, arXiv 2402.14740; verl's `compute_rloo_outcome_advantage`):
    each completion's baseline is the mean of the other G - 1 in its group,
    A_i = r_i - 1/(G - 1) sum_{j != i} r_j = G / (G - 1) (r_i - mean_group r)."""
    g = rewards.shape[-1]
    return (rewards - rewards.mean(-1, keepdims=True)) * (g / (g - 1))


def token_whiten(values: jax.Array, lengths: jax.Array) -> jax.Array:
    """verl's `masked_whiten` of a value repeated over each completion's tokens:
    (x_i - mu) / sqrt(var + 1e-8) with mu = sum_i n_i x_i / N and the unbiased
    var = sum_i n_i (x_i - mu)^2 / (N - 1), n_i = `lengths`, N = sum_i n_i, over the whole
    batch (every prompt and process of the update's batch)."""
    n = lengths.astype(jnp.float32)
    total = n.sum()
    mean = (n * values).sum() / jnp.maximum(total, 1.0)
    var = (n * (values - mean) ** 2).sum() / jnp.maximum(total - 1.0, 1.0)
    return (values - mean) * jax.lax.rsqrt(var + WHITEN_EPS)


def reinforce_plus_plus_advantages(rewards: jax.Array, lengths: jax.Array, *,
                                   scale: str) -> jax.Array:
    """REINFORCE++ (Hu 2025, arXiv 2501.03262; verl's
    `compute_reinforce_plus_plus_outcome_advantage`, gamma = 1): the return r_i at each token,
    whitened over the batch's completion tokens, A_i = (r_i - mu) / sqrt(var + 1e-8)
    (`token_whiten`); no group baseline."""
    return token_whiten(rewards, lengths)


def reinforce_plus_plus_baseline_advantages(rewards: jax.Array, lengths: jax.Array, *,
                                            scale: str) -> jax.Array:
    """REINFORCE++ with the group baseline (Hu 2025, arXiv 2501.03262; verl's
    `compute_reinforce_plus_plus_baseline_outcome_advantage`): x_i = r_i - mean_group r, then
    whitened over the batch's completion tokens, A_i = (x_i - mu) / sqrt(var + 1e-8)
    (`token_whiten`)."""
    return token_whiten(rewards - rewards.mean(-1, keepdims=True), lengths)


ADVANTAGE_ESTIMATORS = {
    "grpo": grpo_advantages,
    "rloo": rloo_advantages,
    "reinforce_plus_plus": reinforce_plus_plus_advantages,
    "reinforce_plus_plus_baseline": reinforce_plus_plus_baseline_advantages,
}


@dataclasses.dataclass(frozen=True)
class AdvantageSettings:
    """How a batch's rewards become advantages; each field is the `grpo` key of its name.
    A ConfigError names the first key that cannot work."""

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
    """Advantages [B, G] of a batch's rewards [B, G] by `settings.advantage_estimator`, or
    under per_reward normalisation GDPO's of each reward function's values `per_fn`
    [B, G, F]; `lengths` [B, G] the completions' token counts in the loss."""
    if settings.per_reward:
        weights = jnp.asarray(settings.reward_weights, jnp.float32)
        return per_reward_advantages(per_fn, weights, settings.scale_rewards)
    return ADVANTAGE_ESTIMATORS[settings.advantage_estimator](rewards, lengths,
                                                              scale=settings.scale_rewards)
