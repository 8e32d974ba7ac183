"""Advantage estimators: a batch's rewards -> one advantage per completion, registered by name.

An estimator is a pure function `(rewards [B, G], lengths [B, G], *, scale) -> [B, G]`: B
prompts, G completions each (prompt-major), `lengths` each completion's token count in the loss
(its mask's sum; 0 for a completion the loss leaves out), `scale` the `rl.scale_rewards`
setting. Adding one is a function and its entry in `ADVANTAGE_ESTIMATORS`; `rl.advantage_estimator`
names the entry. Rewards are outcome rewards (one per completion), so a return is the reward
at every token (discount 1).

Mixed-policy groups: the ground-truth rows are members of their group like the sampled ones, in
every estimator: they enter the group mean, the leave-one-out baselines and the batch
statistics (with their own token counts). GDPO (`multi_reward_normalization="per_reward"`)
normalises each reward on its own and is an estimator of its own (`per_reward_advantages`),
so it runs with "grpo" only; `rl.scale_rewards` is grpo's setting, "none" with the others
(validate.py refuses the other combinations).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sallm_jax.rl.grpo import group_advantages

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
