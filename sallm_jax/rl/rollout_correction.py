"""Rollout correction: importance weights for the sampler-vs-trainer log-prob gap [N, C].

TRL's `vllm_importance_sampling_mode` (TIS / MIS, Yao et al. 2025, "Your Efficient RL Framework
Secretly Brings You Off-Policy RL Training"; verl's rollout-correction configs). w_t =
pi_old(y_t) / pi_sampler(y_t) per token, or W = prod_t w_t per sequence; `*_truncate` clips to
[C_min, C_max], `*_mask` zeroes outside. The weights multiply the policy term (`grpo_loss`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

ROLLOUT_CORRECTIONS = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def rollout_correction_weights(old_logp: jax.Array, rollout_logp: jax.Array, mask: jax.Array,
                               mode: str, *, low: float | None = None,
                               high: float | None = None) -> tuple[jax.Array, jax.Array]:
    """(weights [N, C], outside [N, C] bool): importance weights under `mode`, bounds [low, high].

    `old_logp` (the trainer at the sampler's parameters), `rollout_logp`, `mask` [N, C]; `outside`:
    the raw token (sequence) ratio lay outside the bounds (None: none). No gradient. ValueError
    naming grpo.rollout_correction for an unknown `mode`."""
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
    """rollout_is/mean, /min, /max and /outside_fraction over the tokens under `mask` [N, C].

    Over the sequences in sequence modes; TRL's `sampling/importance_sampling_ratio/*`."""
    if mode.startswith("sequence"):
        units, weights, outside = mask.max(-1) > 0, weights[:, 0], outside[:, 0]
    else:
        units = mask > 0
    count = jnp.maximum(units.sum(), 1)
    return {"rollout_is/mean": jnp.where(units, weights, 0.0).sum() / count,
            "rollout_is/min": jnp.where(units, weights, jnp.inf).min(),
            "rollout_is/max": jnp.where(units, weights, -jnp.inf).max(),
            "rollout_is/outside_fraction": (outside & units).sum() / count}
