"""GRPO: group-relative advantages and the loss (`grpo_loss`); N rows x C completion tokens."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sallm_jax.rl.aggregation import AGGREGATIONS
from sallm_jax.rl.loss_settings import IMPORTANCE_LEVELS, LossSettings
from sallm_jax.rl.policy_terms import TermInputs
from sallm_jax.rl.settings import check

ADVANTAGE_EPS = 1e-4
SCALE_REWARDS = ("group", "batch", "none")  # `grpo.scale_rewards`: the std that divides
MULTI_REWARD_NORMALIZATIONS = ("sum", "per_reward")  # `grpo.multi_reward_normalization`


def check_scale(scale: str) -> None:
    """Raise ConfigError naming grpo.scale_rewards unless `scale` is one of `SCALE_REWARDS`."""
    check(scale in SCALE_REWARDS, "scale_rewards", f"one of {SCALE_REWARDS}", scale)


def group_advantages(rewards: jax.Array, scale: str = "group") -> jax.Array:
    """A = (r - mean_group r) / (std + 1e-4) of rewards [batch, group], same shape.

    std (ddof=1) over the group ("group"), the batch ("batch"), or none ("none": A = r - mean)."""
    check_scale(scale)
    centred = rewards - rewards.mean(axis=-1, keepdims=True)
    if scale == "none":
        return centred
    if scale == "group":
        std = rewards.std(axis=-1, ddof=1, keepdims=True)
    else:
        std = rewards.std(ddof=1)
    return centred / (std + ADVANTAGE_EPS)


def _masked_moments(x: jax.Array, valid: jax.Array, axis) -> tuple[jax.Array, jax.Array]:
    """Mean and ddof=1 std of `x` over `axis` among `valid` entries (0 when too few)."""
    n = valid.sum(axis, keepdims=True)
    mean = jnp.where(valid, x, 0.0).sum(axis, keepdims=True) / jnp.maximum(n, 1)
    sq = jnp.where(valid, (x - mean) ** 2, 0.0).sum(axis, keepdims=True)
    return mean, jnp.sqrt(sq / jnp.maximum(n - 1, 1))


def per_reward_advantages(per_fn: jax.Array, weights: jax.Array,
                          scale: str = "group") -> jax.Array:
    """GDPO advantages (Liu et al. 2026, arXiv 2601.05242) [batch, group] of per_fn [.., F].

    Per reward k over the samples it applies to (NaN: not; A_k = 0), `scale` as `group_advantages`:
    A_k = (r_k - mean_group r_k) / (std_group r_k + 1e-4); S = sum_k w_k A_k;
    A = (S - mean_batch S) / (std_batch S + 1e-4)."""
    check_scale(scale)
    valid = ~jnp.isnan(per_fn)
    rewards = jnp.where(valid, per_fn, 0.0)
    mean, std = _masked_moments(rewards, valid, axis=1)
    centred = jnp.where(valid, rewards - mean, 0.0)
    if scale == "group":
        centred = centred / (std + ADVANTAGE_EPS)
    elif scale == "batch":
        centred = centred / (_masked_moments(rewards, valid, axis=(0, 1))[1] + ADVANTAGE_EPS)
    summed = (centred * weights).sum(-1)
    return (summed - summed.mean()) / (summed.std(ddof=1) + ADVANTAGE_EPS)


def k3_kl(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
    """Per-token k3 estimator of KL(pi || pi_ref): exp(ref - logp) - (ref - logp) - 1."""
    delta = ref_logp - logp
    return jnp.exp(delta) - delta - 1.0


def log_importance_weights(logp: jax.Array, old_logp: jax.Array, mask: jax.Array,
                           level: str) -> jax.Array:
    """[N, C] log pi_theta / pi_old per token, or ("sequence") each sequence's masked mean."""
    log_ratio = logp - old_logp
    if level == "token":
        return log_ratio
    if level == "sequence":
        per_seq = (log_ratio * mask).sum(-1) / jnp.maximum(mask.sum(-1), 1.0)
        return jnp.broadcast_to(per_seq[:, None], log_ratio.shape)
    raise ValueError(f"grpo.importance_sampling_level: expected one of {IMPORTANCE_LEVELS}, "
                     f"got {level!r}")


def high_entropy_mask(entropy: jax.Array, mask: jax.Array, top_quantile: float) -> jax.Array:
    """[N, C] bool: tokens under `mask` with entropy >= the (1 - top_quantile) quantile.

    TRL's `top_entropy_quantile` (Wang et al. 2025, "Beyond the 80/20 Rule"); linear interpolation
    (`np.quantile`), ties kept, no gradient through the threshold."""
    values = jnp.where(mask > 0, jax.lax.stop_gradient(entropy), jnp.nan)
    threshold = jnp.nanquantile(values, 1.0 - top_quantile)
    return (entropy >= threshold) & (mask > 0)


def off_policy_sequence_mask(logp: jax.Array, old_logp: jax.Array, advantages: jax.Array,
                             mask: jax.Array, threshold: float) -> jax.Array:
    """[N, 1] 0.0 for sequences with A < 0 and mean(old_logp - logp) > `threshold`, else 1.0.

    DeepSeek-V3.2's off-policy sequence masking (arXiv 2512.02556, eq. 9; TRL's
    `off_policy_mask_threshold`). `logp`, `old_logp`, `mask` [N, C], `advantages` [N]."""
    drift = (old_logp - jax.lax.stop_gradient(logp)) * mask
    mean_drift = drift.sum(-1) / jnp.maximum(mask.sum(-1), 1.0)
    keep = (advantages >= 0) | (mean_drift <= threshold)
    return keep.astype(logp.dtype)[:, None]


DEFAULT_LOSS = LossSettings()  # GRPO's clipped surrogate, no KL term, DAPO's aggregation


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of `values` (broadcast to `mask` [N, C]) over the tokens under `mask`."""
    return (values * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def grpo_loss(logp: jax.Array, old_logp: jax.Array, ref_logp: jax.Array | None,
              advantages: jax.Array, mask: jax.Array, settings: LossSettings = DEFAULT_LOSS,
              *, off_policy: jax.Array | None = None, entropy: jax.Array | None = None,
              rollout_logp: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The GRPO objective as a loss to minimise: (scalar loss, metrics).

    per_token = keep * w * term + beta * k3(logp, ref_logp) - entropy_coef * H, aggregated by
    `loss_aggregation`; term: `POLICY_TERMS[loss_type]` (default -min(r A, clip(r, 1 - eps,
    1 + eps_high) A)); keep: `high_entropy_mask`, `off_policy_sequence_mask` (the normaliser still
    counts every token, as TRL's); w: rollout-correction weights unless the term folds them;
    use_bias_correction_kl: k3 x r. Off-policy (ground-truth) rows take -exp(logp) A, unclipped.

    Args:
      logp, old_logp, ref_logp: [N, C] under the policy trained, the one that sampled (`logp`
        stop-gradient for one update per batch), the reference (None when beta == 0).
      advantages: [N]; mask: [N, C] 1.0 on completion tokens; off_policy: [N] bool or None.
      entropy, rollout_logp: [N, C], needed with an entropy selection or bonus / when
        `settings.needs_rollout_logp`; else ValueError naming the key.
    Metrics (means over sampled tokens): clip_fraction (= /region), /low and /high (r < 1, r > 1),
    ratio_mean, the term's stats; kl, entropy_kept_fraction, off_policy_masked_fraction when on."""
    s, term = settings, settings.policy_term
    if s.needs_rollout_logp and rollout_logp is None:
        raise ValueError("grpo.rollout_correction / grpo.rollout_dtype: the loss needs the "
                         "sampler's log-probs (rollout_logp)")
    bonus = isinstance(s.entropy_coef, jax.Array) or s.entropy_coef != 0.0
    if (s.top_entropy_quantile < 1.0 or bonus) and entropy is None:
        raise ValueError("grpo.top_entropy_quantile / grpo.entropy_coef need the policy's "
                         "entropy")
    mask = mask.astype(logp.dtype)
    log_ratio = log_importance_weights(logp, old_logp, mask, s.importance_sampling_level)
    adv = advantages[:, None]
    weights = (jax.lax.stop_gradient(s.rollout_weights(old_logp, rollout_logp, mask)[0])
               if s.rollout_correction else None)
    folded = weights is not None and term.folds_rollout_weights
    out = term.fn(TermInputs(logp, log_ratio, adv, mask, jnp.log(weights) if folded else None),
                  s.term)
    per_token = out.per_token
    if s.off_policy_mask_threshold > 0:  # before the ground-truth rows, which it never drops
        drift_from = rollout_logp if s.rollout_dtype else old_logp
        kept = off_policy_sequence_mask(logp, drift_from, advantages, mask,
                                        s.off_policy_mask_threshold)
        per_token = per_token * kept
    if weights is not None and not folded:
        per_token = per_token * weights
    sampled = mask
    if off_policy is not None:
        per_token = jnp.where(off_policy[:, None], -jnp.exp(logp) * adv, per_token)
        sampled = mask * ~off_policy[:, None]
    metrics = {"clip_fraction": _masked_mean(out.cut, sampled),
               "clip_fraction/low": _masked_mean(out.cut * (log_ratio < 0), sampled),
               "clip_fraction/high": _masked_mean(out.cut * (log_ratio > 0), sampled),
               "clip_fraction/region": _masked_mean(out.cut, sampled),
               "ratio_mean": _masked_mean(jnp.exp(log_ratio), sampled),
               **{name: _masked_mean(v, sampled) for name, v in out.stats.items()}}
    if s.off_policy_mask_threshold > 0:
        rows = sampled.max(-1)
        metrics["off_policy_masked_fraction"] = (
            ((1.0 - kept[:, 0]) * rows).sum() / jnp.maximum(rows.sum(), 1.0))
    if s.top_entropy_quantile < 1.0:
        keep = high_entropy_mask(entropy, mask, s.top_entropy_quantile)
        per_token = per_token * keep
        metrics["entropy_kept_fraction"] = keep.sum() / jnp.maximum(mask.sum(), 1.0)
    if bonus:
        per_token = per_token - s.entropy_coef * entropy
    if s.beta != 0.0:
        kl = k3_kl(logp, ref_logp) * (jnp.exp(log_ratio) if s.use_bias_correction_kl else 1.0)
        per_token = per_token + s.beta * kl
        metrics["kl"] = _masked_mean(kl, mask)
    loss = AGGREGATIONS[s.loss_aggregation].reduce(per_token, mask, logp.shape[1])
    return loss, metrics
