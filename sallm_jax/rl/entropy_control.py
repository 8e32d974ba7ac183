"""Adaptive entropy control (He et al. 2025, arXiv 2505.22312; TRL's `use_adaptive_entropy`).

Update k applies a_k = c_k if H_{k-1} <= target else 0 (H_{-1} = +inf), then
c_{k+1} = min(c_k + delta, c_max) if H_k <= target else max(c_k - delta, c_min). The state is
`TrainState.extras["entropy_control"]`, so a resume continues it."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from sallm_jax.rl.settings import check, finite

EXTRAS_KEY = "entropy_control"


@dataclasses.dataclass(frozen=True)
class EntropyControlSettings:
    """The controller's `grpo` keys, checked only with `use_adaptive_entropy`."""

    use_adaptive_entropy: bool = False
    entropy_coef: float = 0.0  # c_0
    entropy_target: float = 0.2  # nats
    entropy_coef_min: float = 0.0
    entropy_coef_max: float = 1.0
    entropy_coef_delta: float = 0.005

    def __post_init__(self):
        check(isinstance(self.use_adaptive_entropy, bool), "use_adaptive_entropy",
              "True or False", self.use_adaptive_entropy)
        if not self.use_adaptive_entropy:
            return
        check(finite(self.entropy_target) and self.entropy_target > 0, "entropy_target",
              "a mean entropy in nats > 0 (e.g. the logged entropy early in training)",
              self.entropy_target)
        check(finite(self.entropy_coef_delta) and self.entropy_coef_delta > 0,
              "entropy_coef_delta", "a step > 0 (e.g. 0.005)", self.entropy_coef_delta)
        low, high = self.entropy_coef_min, self.entropy_coef_max
        check(finite(low) and low >= 0, "entropy_coef_min", "a bound >= 0", low)
        check(finite(high) and high >= low, "entropy_coef_max",
              f"a bound >= grpo.entropy_coef_min = {low:g}", high)
        check(finite(self.entropy_coef) and low <= self.entropy_coef <= high, "entropy_coef",
              f"the starting coefficient, within [grpo.entropy_coef_min, "
              f"grpo.entropy_coef_max] = [{low:g}, {high:g}] with grpo.use_adaptive_entropy",
              self.entropy_coef)


class EntropyControl(NamedTuple):
    """The controller's state: scalars, float32."""

    coef: jax.Array  # c_k, the coefficient the next update applies when gated on
    last_entropy: jax.Array  # H_{k-1}, nats; +inf before the first measurement


def init_entropy_control(coef: float) -> EntropyControl:
    """The state before the first update: c_0 = `coef` (`grpo.entropy_coef`), nothing measured."""
    return EntropyControl(jnp.float32(coef), jnp.float32(jnp.inf))


def applied_coefficient(control: EntropyControl, target: float) -> jax.Array:
    """a_k: the coefficient when the last measured entropy is at or below `target`, else 0."""
    return jnp.where(control.last_entropy <= target, control.coef, 0.0)


def next_entropy_control(control: EntropyControl, entropy: jax.Array, *, target: float,
                         delta: float, coef_min: float, coef_max: float) -> EntropyControl:
    """The state after an update that measured mean entropy `entropy` (nats): c_{k+1} above."""
    entropy = jax.lax.stop_gradient(jnp.asarray(entropy, jnp.float32))
    coef = jnp.where(entropy <= target, jnp.minimum(control.coef + delta, coef_max),
                     jnp.maximum(control.coef - delta, coef_min))
    return EntropyControl(coef.astype(jnp.float32), entropy)
