"""Rollout correction: importance weights for the gap between the sampler's and the trainer's
log-probs of the same tokens at the same parameters (a rollout at another precision,
`grpo.rollout_dtype`), truncated or masked, per token or per sequence.

TRL's `vllm_importance_sampling_mode` (`token_truncate`, `token_mask`, `sequence_truncate`,
`sequence_mask`) with its bounds C_min / C_max; truncated importance sampling (TIS) and masked
importance sampling (MIS) after Yao et al. 2025, "Your Efficient RL Framework Secretly Brings
You Off-Policy RL Training", and verl's rollout-correction configs. With
w_t = pi_old(y_t) / pi_sampler(y_t) (pi_old: the trainer at the sampler's parameters):
- token modes weigh token t by w_t; sequence modes weigh every token of a sequence by
  W = prod_t w_t = exp(sum_t log pi_old - log pi_sampler);
- `*_truncate` clips the weight to [C_min, C_max]; `*_mask` sets it to 0 outside.
The weights multiply the policy term (`grpo_loss` with `LossSettings.rollout_correction`) and
carry no gradient.

Shapes: N = batch x group completions, C = completion length.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

ROLLOUT_CORRECTIONS = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def rollout_correction_weights(old_logp: jax.Array, rollout_logp: jax.Array, mask: jax.Array,
                               mode: str, *, low: float | None = None,
                               high: float | None = None) -> tuple[jax.Array, jax.Array]:
    """(weights [N, C], outside [N, C] bool): each token's importance weight under `mode` and
    whether its raw ratio (the token's, or in sequence modes its sequence's) lay outside
    [low, high] (None: no bound on that side).

    Args:
      old_logp: [N, C] the trainer's log-probs of the sampled tokens at the sampler's
        parameters; rollout_logp: [N, C] the sampler's; mask: [N, C] completion tokens.
      mode: one of `ROLLOUT_CORRECTIONS`; a ValueError names grpo.rollout_correction otherwise.
    """
    if mode not in ROLLOUT_CORRECTIONS:
        raise ValueError(f"grpo.rollout_correction: expected one of {ROLLOUT_CORRECTIONS}, "
                         f"got {mode!r}")
    diff = jax.lax.stop_gradient((old_logp - rollout_logp) * mask)
    if mode.startswith("sequence"):
        diff = jnp.broadcast_to(diff.sum(-1, keepdims=True), diff.shape)
    ratio = jnp.exp(diff)
    lo = -jnp.inf if low is None else low
    hi = jnp.inf if high is None else high
    outside = (ratio < lo) | (ratio > hi)
    if mode.endswith("truncate"):
        return jnp.clip(ratio, lo, hi), outside
    return jnp.where(outside, 0.0, ratio), outside


def rollout_correction_stats(weights: jax.Array, outside: jax.Array, mask: jax.Array,
                             mode: str) -> dict[str, jax.Array]:
    """rollout_is/mean, /min, /max of the weights and rollout_is/outside_fraction (the share
    truncated or masked), over the tokens under `mask` [N, C] in token modes, over the
    sequences holding one in sequence modes (TRL's `sampling/importance_sampling_ratio/*`)."""
    if mode.startswith("sequence"):
        units, weights, outside = mask.max(-1) > 0, weights[:, 0], outside[:, 0]
    else:
        units = mask > 0
    count = jnp.maximum(units.sum(), 1)
    return {"rollout_is/mean": jnp.where(units, weights, 0.0).sum() / count,
            "rollout_is/min": jnp.where(units, weights, jnp.inf).min(),
            "rollout_is/max": jnp.where(units, weights, -jnp.inf).max(),
            "rollout_is/outside_fraction": (outside & units).sum() / count}
