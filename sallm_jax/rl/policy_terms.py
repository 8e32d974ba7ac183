"""The policy terms of the GRPO loss, registered by name (`rl.loss_type`): the clipped
surrogate (GRPO, DAPO, GSPO), CISPO, SAPO, LUSPO and VESPO.

A term is a function (logp, log_ratio, adv, mask, settings) -> (per-token loss [N, C], where
it cut the ratio's gradient [N, C] bool) of the log-probs under the policy being trained
[N, C], the log importance ratio at the configured level [N, C], the advantages [N, 1], the
completion mask [N, C] and `TermSettings`; `grpo_loss` aggregates it. A new term is one
function and its entry in `POLICY_TERMS`.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

VESPO_LOG_FLOOR = math.log(1e-8)  # VESPO's floor of log W (and of a token's log weight)


@dataclasses.dataclass(frozen=True)
class TermSettings:
    """What the terms read: the clip range, `delta`'s cap (None: none), SAPO's temperatures,
    VESPO's kernel shapes, and `log_weights` [N, C] (the rollout correction's log weights,
    which VESPO folds into its sequence weight; None: none)."""

    epsilon: float = 0.2
    epsilon_high: float = 0.2
    delta: float | None = None
    tau_pos: float = 1.0
    tau_neg: float = 1.05
    vespo_k_pos: float = 2.0
    vespo_lambda_pos: float = 3.0
    vespo_k_neg: float = 3.0
    vespo_lambda_neg: float = 2.0
    log_weights: jax.Array | None = None


def _clipped(log_ratio, adv, s: TermSettings):
    ratio = jnp.exp(log_ratio)
    capped = ratio if s.delta is None else jnp.minimum(ratio, s.delta)
    unclipped = capped * adv
    clipped = jnp.clip(ratio, 1.0 - s.epsilon, 1.0 + s.epsilon_high) * adv
    return -jnp.minimum(unclipped, clipped), (clipped < unclipped) | (capped < ratio)


def clipped_term(logp, log_ratio, adv, mask, s: TermSettings):
    """PPO's clipped surrogate (GRPO, DAPO, GSPO):
    -min(min(r, delta) A, clip(r, 1 - eps, 1 + eps_high) A), r = exp(log_ratio).

    `delta` (None: no cap) is the upper bound of two-sided GRPO clipping (INTELLECT-2; TRL's
    `delta`): it caps the unclipped ratio, which only binds for negative advantages. It is
    dual-clip PPO (Ye et al. 2020; verl's `clip_ratio_c`, loss
    min(max(-r A, -clip(r) A), -c A) where A < 0) with c = delta: for c >= 1 + eps_high the two
    are the same function. Tokens it caps count as cut (verl's `pg_clipfrac_lower`)."""
    return _clipped(log_ratio, adv, s)


def cispo_term(logp, log_ratio, adv, mask, s: TermSettings):
    """CISPO (MiniMax-M1, 2025; TRL's and ms-swift's `loss_type="cispo"`):
    -sg(min(r, eps_high)) A log pi_theta. The importance weight is capped and its gradient
    stopped, so every token keeps a gradient (REINFORCE weighted by the capped ratio) instead of
    the clipped ones getting none; `epsilon_high` is the cap itself here (e.g. 5)."""
    weight = jax.lax.stop_gradient(jnp.minimum(jnp.exp(log_ratio), s.epsilon_high))
    return -weight * adv * logp, jnp.exp(log_ratio) > s.epsilon_high


def sapo_term(logp, log_ratio, adv, mask, s: TermSettings):
    """SAPO (Soft Adaptive Policy Optimization, arXiv 2511.20347): a smooth gate instead of the
    hard clip, -f(r) A with f(r) = sigmoid(tau (r - 1)) 4 / tau, tau = tau_pos where A > 0 and
    tau_neg elsewhere. f'(1) = 1, so on-policy gradients equal GRPO's; far from r = 1 they fade
    instead of dropping to zero. Nothing is clipped (the mask is all False)."""
    ratio = jnp.exp(log_ratio)
    tau = jnp.where(adv > 0, s.tau_pos, s.tau_neg)
    return -jax.nn.sigmoid(tau * (ratio - 1.0)) * 4.0 / tau * adv, jnp.zeros_like(ratio, bool)


def luspo_term(logp, log_ratio, adv, mask, s: TermSettings):
    """LUSPO (Length-Unbiased Sequence Policy Optimization, Liu et al. 2026, arXiv 2602.05261;
    TRL's `loss_type="luspo"`): GSPO's clipped surrogate on the sequence ratio
    s_i = exp(mean_t log pi_theta / pi_old), scaled by the sequence's length |o_i|:
    -|o_i| min(s_i A_i, clip(s_i, 1 - eps, 1 + eps_high) A_i) on each of its tokens. Under the
    "grpo" aggregation (each sequence's token mean, then the mean over sequences) the loss is
    1/N sum_i |o_i| x GSPO's term, so a long sequence no longer weighs less than a short one.
    Needs the sequence-level ratio (`importance_sampling_level="sequence"`)."""
    per_token, cut = _clipped(log_ratio, adv, s)
    return per_token * mask.sum(-1, keepdims=True), cut


def vespo_phi(log_ratio, adv, mask, s: TermSettings) -> jax.Array:
    """[N, 1] VESPO's kernel phi(W_i) of each sequence (see `vespo_term`), no gradient."""
    log_w = (jnp.clip(log_ratio, -20.0, 20.0) * mask).sum(-1, keepdims=True)
    if s.log_weights is not None:
        log_w = log_w + (jnp.clip(s.log_weights, VESPO_LOG_FLOOR, 20.0) * mask).sum(
            -1, keepdims=True)
    log_w = jax.lax.stop_gradient(jnp.clip(log_w, VESPO_LOG_FLOOR, 20.0))
    k = jnp.where(adv >= 0, s.vespo_k_pos, s.vespo_k_neg)
    lam = jnp.maximum(jnp.where(adv >= 0, s.vespo_lambda_pos, s.vespo_lambda_neg), 1e-4)
    return jnp.nan_to_num(jnp.exp(lam + k * log_w - lam * jnp.exp(log_w)), nan=0.0,
                          posinf=0.0, neginf=0.0)


def vespo_term(logp, log_ratio, adv, mask, s: TermSettings):
    """VESPO (Variational Sequence-level Soft Policy Optimization, Shen et al. 2026,
    arXiv 2602.10693; TRL's `loss_type="vespo"`): -sg(phi(W_i)) A_i log pi_theta with W_i the
    sequence's importance weight pi_theta(o_i) / pi_old(o_i) = exp(sum_t log ratio), not
    length-normalised, and the gamma kernel phi(W) = W^k exp(lambda (1 - W)) (phi(1) = 1, so
    on-policy it is REINFORCE), k, lambda = vespo_k_pos, vespo_lambda_pos where A >= 0, else
    the _neg pair: both sides of W = 1 are smoothly down-weighted instead of clipped. As TRL,
    each token's log ratio is clamped to [-20, 20], log W to [log 1e-8, 20], lambda to >= 1e-4,
    and the rollout correction's token weights (`log_weights`, each clamped to
    [log 1e-8, 20]) multiply W. Needs the token-level ratio. Nothing is clipped."""
    return -vespo_phi(log_ratio, adv, mask, s) * adv * logp, jnp.zeros_like(log_ratio, bool)


POLICY_TERMS = {"grpo": clipped_term, "cispo": cispo_term, "sapo": sapo_term,
                "luspo": luspo_term, "vespo": vespo_term}
# The importance-sampling level each term needs (the others take either).
TERM_LEVELS = {"luspo": "sequence", "vespo": "token"}
