"""Adaptive entropy control: an entropy-bonus coefficient that rises while the policy's entropy
is at or below a target and falls while it is above, within bounds.

Skywork-OR1 (He et al. 2025, arXiv 2505.22312, "adaptive entropy control"), in the form of
TRL's `use_adaptive_entropy` (`entropy_coef` the initial coefficient, `entropy_target`,
`entropy_coef_min`, `entropy_coef_max`, `entropy_coef_delta`): update k applies
a_k = c_k if H_{k-1} <= target else 0, the entropy measured at the previous update (none
before the first: +inf, so the first update applies nothing), and after it
c_{k+1} = min(c_k + delta, c_max) if H_k <= target else max(c_k - delta, c_min). The state
lives in the train state (`TrainState.extras["entropy_control"]`), so a resume continues it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

EXTRAS_KEY = "entropy_control"


class EntropyControl(NamedTuple):
    """The controller's state: scalars, float32."""

    coef: jax.Array  # c_k, the coefficient the next update applies when gated on
    last_entropy: jax.Array  # H_{k-1}, nats; +inf before the first measurement


def init_entropy_control(coef: float) -> EntropyControl:
    """The state before the first update: c_0 = `coef` (`rl.entropy_coef`), nothing measured."""
    return EntropyControl(jnp.float32(coef), jnp.float32(jnp.inf))


def applied_coefficient(control: EntropyControl, target: float) -> jax.Array:
    """a_k: the coefficient when the last measured entropy is at or below `target`, else 0."""
    return jnp.where(control.last_entropy <= target, control.coef, 0.0)


def next_entropy_control(control: EntropyControl, entropy: jax.Array, *, target: float,
                         delta: float, coef_min: float, coef_max: float) -> EntropyControl:
    """The state after an update that measured mean entropy `entropy` (nats, a scalar):
    c + delta (at most `coef_max`) when `entropy` <= `target`, else c - delta (at least
    `coef_min`); `entropy` becomes the last measurement."""
    entropy = jax.lax.stop_gradient(jnp.asarray(entropy, jnp.float32))
    coef = jnp.where(entropy <= target, jnp.minimum(control.coef + delta, coef_max),
                     jnp.maximum(control.coef - delta, coef_min))
    return EntropyControl(coef.astype(jnp.float32), entropy)
