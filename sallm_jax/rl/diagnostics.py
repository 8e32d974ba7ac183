"""GRPO step diagnostics: the sampler-vs-trainer log-prob gap, the completion lengths."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of [N, C] `x` over the positions where `mask` [N, C] is non-zero (0 if none)."""
    mask = mask.astype(x.dtype)
    return (x * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def logp_difference(rollout_logp: jax.Array, logp: jax.Array,
                    mask: jax.Array) -> dict[str, jax.Array]:
    """"logp_diff/mean" and "/max" over `mask` of |rollout_logp - logp|, all [N, C]."""
    diff = jnp.abs(rollout_logp - logp) * (mask > 0)
    return {"logp_diff/mean": masked_mean(diff, mask), "logp_diff/max": diff.max()}


def completion_length_range(lengths: np.ndarray) -> dict[str, float]:
    """min and max of completion lengths [N] (tokens, end included) over rows of length > 0."""
    held = lengths[lengths > 0]
    return {"completion_length/min": float(held.min()) if held.size else 0.0,
            "completion_length/max": float(held.max()) if held.size else 0.0}


class LogpDiffWatch:
    """Warns once per stage when "logp_diff/mean" > `threshold` (warn_logp_diff_above; 0: off)."""

    def __init__(self, threshold: float, stage: str = "grpo"):
        self.threshold, self.stage, self.warned = threshold, stage, False

    def after_step(self, step: int, metrics: Mapping) -> bool:
        """True when this step warned."""
        if self.warned or not self.threshold or "logp_diff/mean" not in metrics:
            return False
        gap = float(np.asarray(metrics["logp_diff/mean"]))
        if gap <= self.threshold:
            return False
        self.warned = True
        logging.warning(
            "[%s] step %d: the sampler's and the trainer's log-probs of the same tokens differ "
            "by %.3g on average (max %.3g), above %.3g (grpo.warn_logp_diff_above): the update "
            "does not score the policy that sampled (stale weights, another temperature or "
            "precision); warned once per stage", self.stage, step, gap,
            float(np.asarray(metrics.get("logp_diff/max", gap))), self.threshold)
        return True
