"""Checks that several stages' sections share: the optimiser's numbers, positive integers, the
validation schedule and the metric a stage selects its best parameters on."""

from __future__ import annotations

import math

import ml_collections

from sallm_jax.metrics.names import HIGHER_IS_BETTER
from sallm_jax.runtime.user_errors import require


def optimiser_numbers(section: ml_collections.ConfigDict, name: str) -> None:
    """The optimiser settings of training section `name`: finite, the rate and clip > 0."""
    for key, positive in (("learning_rate", True), ("max_grad_norm", True),
                          ("weight_decay", False)):
        value = section[key]
        ok = isinstance(value, int | float) and math.isfinite(value) and (
            value > 0 if positive else value >= 0)
        require(ok, f"{name}.{key}", "a finite value " + ("> 0" if positive else ">= 0"), value)


def positive_ints(section: ml_collections.ConfigDict, name: str, keys: tuple[str, ...]) -> None:
    """Each of `keys` of section `name` is an integer > 0."""
    for key in keys:
        value = section[key]
        require(isinstance(value, int) and value > 0, f"{name}.{key}", "a positive integer",
                value)


def validation(section: ml_collections.ConfigDict, name: str) -> None:
    """`eval_every` (steps between validation scores, 0: never) and `select_on`, the metric the
    best parameters are kept by (higher is better)."""
    require(isinstance(section.eval_every, int) and section.eval_every >= 0,
            f"{name}.eval_every", "an integer >= 0", section.eval_every)
    require(section.select_on in HIGHER_IS_BETTER, f"{name}.select_on",
            f"a metric where higher is better, one of {HIGHER_IS_BETTER}", section.select_on)
