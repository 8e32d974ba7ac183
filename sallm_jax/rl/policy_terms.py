"""The GRPO loss's policy terms by `grpo.loss_type`: clipped surrogate, CISPO, SAPO, LUSPO, VESPO.

A term is `(TermInputs, settings) -> TermOutput` plus a frozen settings dataclass of `grpo` keys;
adding one is a function, its dataclass and a `register_policy_term` line. N rows x C tokens."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from sallm_jax.rl.settings import check, finite

VESPO_LOG_FLOOR = math.log(1e-8)  # VESPO's floor of log W (and of a token's log weight)


class TermInputs(NamedTuple):
    """logp, log_ratio, mask [N, C]; adv [N, 1]; the correction's log_weights [N, C] or None."""

    logp: jax.Array
    log_ratio: jax.Array
    adv: jax.Array
    mask: jax.Array
    log_weights: jax.Array | None = None


class TermOutput(NamedTuple):
    """per_token loss, `cut` (ratio gradient cut, bool) [N, C]; stats [N, C] or [N, 1] (logged)."""

    per_token: jax.Array
    cut: jax.Array
    stats: Mapping[str, jax.Array] = {}


@dataclasses.dataclass(frozen=True)
class PolicyTerm:
    """A term: the `level`/`aggregation` it needs (None: any); whether it folds rollout weights."""

    fn: Callable[[TermInputs, Any], TermOutput]
    settings: type
    level: str | None = None
    aggregation: str | None = None
    folds_rollout_weights: bool = False


POLICY_TERMS: dict[str, PolicyTerm] = {}


def register_policy_term(name: str, fn: Callable[[TermInputs, Any], TermOutput],
                         settings: type, **needs: Any) -> None:
    """Register `fn` and its settings class as `grpo.loss_type=name`; `needs`: `PolicyTerm`'s."""
    POLICY_TERMS[name] = PolicyTerm(fn, settings, **needs)


def term_defaults() -> dict[str, Any]:
    """Every term's settings field -> its default (the first term's): the section's keys."""
    defaults: dict[str, Any] = {}
    for term in POLICY_TERMS.values():
        for field in dataclasses.fields(term.settings):
            defaults.setdefault(field.name, field.default)
    return defaults


@dataclasses.dataclass(frozen=True)
class ClipRange:
    """Ratio range [1 - epsilon, 1 + epsilon_high] (None: epsilon); `delta` caps r (0: none)."""

    epsilon: float = 0.2
    epsilon_high: float | None = None
    delta: float = 0.0

    def __post_init__(self):
        check(finite(self.epsilon) and self.epsilon > 0, "epsilon", "a value > 0", self.epsilon)
        check(self.epsilon_high is None or (finite(self.epsilon_high) and self.epsilon_high > 0),
              "epsilon_high", "None or a value > 0", self.epsilon_high)
        check(finite(self.delta) and (self.delta == 0 or self.delta > 1 + self.high), "delta",
              f"0 (off) or a cap above 1 + grpo.epsilon_high = {1 + self.high:g}", self.delta)

    @property
    def high(self) -> float:
        """The upper clip range."""
        return self.epsilon if self.epsilon_high is None else self.epsilon_high


@dataclasses.dataclass(frozen=True)
class CispoCap:
    """CISPO's cap of the importance weight: `epsilon_high` itself, > 1 (e.g. 5)."""

    epsilon_high: float = 5.0

    def __post_init__(self):
        check(finite(self.epsilon_high) and self.epsilon_high > 1, "epsilon_high",
              "the cap of CISPO's importance weight, > 1 (e.g. 5.0)", self.epsilon_high)


@dataclasses.dataclass(frozen=True)
class SapoTemperatures:
    """SAPO's gate temperatures where the advantage is positive / not."""

    sapo_tau_pos: float = 1.0
    sapo_tau_neg: float = 1.05

    def __post_init__(self):
        check(finite(self.sapo_tau_pos) and finite(self.sapo_tau_neg) and self.sapo_tau_pos > 0
              and self.sapo_tau_neg > 0, "sapo_tau_pos",
              "positive temperatures (grpo.sapo_tau_pos, grpo.sapo_tau_neg)",
              (self.sapo_tau_pos, self.sapo_tau_neg))


@dataclasses.dataclass(frozen=True)
class VespoKernel:
    """VESPO's kernel W^k exp(lambda (1 - W)): k, lambda for A >= 0 (_pos) and A < 0 (_neg)."""

    vespo_k_pos: float = 2.0
    vespo_lambda_pos: float = 3.0
    vespo_k_neg: float = 3.0
    vespo_lambda_neg: float = 2.0

    def __post_init__(self):
        for key in ("vespo_k_pos", "vespo_k_neg"):
            value = getattr(self, key)
            check(finite(value) and value >= 0, key,
                  "a power >= 0 of the kernel W^k exp(lambda (1 - W))", value)
        for key in ("vespo_lambda_pos", "vespo_lambda_neg"):
            value = getattr(self, key)
            check(finite(value) and value > 0, key,
                  "a rate > 0 of the kernel W^k exp(lambda (1 - W))", value)


def _clipped(log_ratio: jax.Array, adv: jax.Array, s: ClipRange) -> TermOutput:
    ratio = jnp.exp(log_ratio)
    capped = ratio if not s.delta else jnp.minimum(ratio, s.delta)
    unclipped = capped * adv
    clipped = jnp.clip(ratio, 1.0 - s.epsilon, 1.0 + s.high) * adv
    return TermOutput(-jnp.minimum(unclipped, clipped), (clipped < unclipped) | (capped < ratio))


def clipped_term(x: TermInputs, s: ClipRange) -> TermOutput:
    """PPO's clipped surrogate (GRPO, DAPO, GSPO), r = exp(log_ratio).

    -min(min(r, delta) A, clip(r, 1 - eps, 1 + eps_high) A). `delta` (0: none; INTELLECT-2, TRL's
    `delta`) is dual-clip PPO (Ye et al. 2020; verl's `clip_ratio_c`); capped tokens are cut."""
    return _clipped(x.log_ratio, x.adv, s)


def cispo_term(x: TermInputs, s: CispoCap) -> TermOutput:
    """CISPO (MiniMax-M1, 2025; TRL's `loss_type="cispo"`): -sg(min(r, eps_high)) A log pi."""
    ratio = jnp.exp(x.log_ratio)
    weight = jax.lax.stop_gradient(jnp.minimum(ratio, s.epsilon_high))
    return TermOutput(-weight * x.adv * x.logp, ratio > s.epsilon_high)


def sapo_term(x: TermInputs, s: SapoTemperatures) -> TermOutput:
    """SAPO (arXiv 2511.20347): -f(r) A with the smooth gate f(r) = sigmoid(tau (r - 1)) 4 / tau,
    tau = tau_pos where A > 0, else tau_neg. f'(1) = 1 (on-policy it is GRPO); nothing is cut."""
    ratio = jnp.exp(x.log_ratio)
    tau = jnp.where(x.adv > 0, s.sapo_tau_pos, s.sapo_tau_neg)
    return TermOutput(-jax.nn.sigmoid(tau * (ratio - 1.0)) * 4.0 / tau * x.adv,
                      jnp.zeros_like(ratio, bool))


def luspo_term(x: TermInputs, s: ClipRange) -> TermOutput:
    """LUSPO (arXiv 2602.05261; TRL's `loss_type="luspo"`): GSPO's term x |o_i| per token.

    Under the "grpo" aggregation the loss is 1/N sum_i |o_i| x GSPO's term; sequence-level ratio."""
    out = _clipped(x.log_ratio, x.adv, s)
    return out._replace(per_token=out.per_token * x.mask.sum(-1, keepdims=True))


def vespo_phi(x: TermInputs, s: VespoKernel) -> jax.Array:
    """[N, 1] VESPO's kernel phi(W_i) of each sequence (`vespo_term`), no gradient."""
    log_w = (jnp.clip(x.log_ratio, -20.0, 20.0) * x.mask).sum(-1, keepdims=True)
    if x.log_weights is not None:
        log_w = log_w + (jnp.clip(x.log_weights, VESPO_LOG_FLOOR, 20.0) * x.mask).sum(
            -1, keepdims=True)
    log_w = jax.lax.stop_gradient(jnp.clip(log_w, VESPO_LOG_FLOOR, 20.0))
    k = jnp.where(x.adv >= 0, s.vespo_k_pos, s.vespo_k_neg)
    lam = jnp.maximum(jnp.where(x.adv >= 0, s.vespo_lambda_pos, s.vespo_lambda_neg), 1e-4)
    return jnp.nan_to_num(jnp.exp(lam + k * log_w - lam * jnp.exp(log_w)), nan=0.0,
                          posinf=0.0, neginf=0.0)


def vespo_term(x: TermInputs, s: VespoKernel) -> TermOutput:
    """VESPO (arXiv 2602.10693; TRL's `loss_type="vespo"`): -sg(phi(W_i)) A_i log pi.

    W_i = exp(sum_t log ratio), not length-normalised; phi(W) = W^k exp(lambda (1 - W)). As TRL,
    token log ratios are clamped to [-20, 20], log W to [log 1e-8, 20], lambda to >= 1e-4, and
    `log_weights` multiply W. Token-level ratio; nothing is cut; logs vespo/phi_mean."""
    phi = vespo_phi(x, s)
    return TermOutput(-phi * x.adv * x.logp, jnp.zeros_like(x.log_ratio, bool),
                      {"vespo/phi_mean": phi})


register_policy_term("grpo", clipped_term, ClipRange)
register_policy_term("cispo", cispo_term, CispoCap)
register_policy_term("sapo", sapo_term, SapoTemperatures)
register_policy_term("luspo", luspo_term, ClipRange, level="sequence", aggregation="grpo")
register_policy_term("vespo", vespo_term, VespoKernel, level="token",
                     folds_rollout_weights=True)
