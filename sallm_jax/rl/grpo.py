"""GRPO: group-relative advantages, and the loss: a registered policy term
(`policy_terms.POLICY_TERMS`), a k3 KL penalty, token selection and bonus by entropy, the
off-policy sequence mask and the rollout correction, as its `LossSettings` say.

Shapes: N = batch x group completions, C = completion length.
"""

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
    """Advantages A = (r - mean_group) / (std + 1e-4) for rewards [batch, group].

    The standard deviation is the unbiased (ddof=1) one over the group (`scale="group"`), over the
    whole batch (`"batch"`), or not applied (`"none"`), as in common GRPO trainers.
    """
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
    """Mean and unbiased (ddof=1) std of `x` over `axis`, counting only the `valid` entries;
    a mean over none is 0 and a std over fewer than two is 0."""
    n = valid.sum(axis, keepdims=True)
    mean = jnp.where(valid, x, 0.0).sum(axis, keepdims=True) / jnp.maximum(n, 1)
    sq = jnp.where(valid, (x - mean) ** 2, 0.0).sum(axis, keepdims=True)
    return mean, jnp.sqrt(sq / jnp.maximum(n - 1, 1))


def per_reward_advantages(per_fn: jax.Array, weights: jax.Array,
                          scale: str = "group") -> jax.Array:
    """GDPO advantages (Liu et al. 2026, arXiv 2601.05242) for per-function rewards
    [batch, group, F], NaN where a reward does not apply: each reward is normalised within its
    group on its own, A_k = (r_k - mean_group r_k) / (std_group r_k + 1e-4) (over the samples
    it applies to; 0 on the others; `scale` as in `group_advantages`), the weighted sum
    S = sum_k w_k A_k is formed, and S is normalised over the batch,
    A = (S - mean_batch S) / (std_batch S + 1e-4). Rewards of different scale and difficulty
    thus keep their own resolution instead of collapsing into the few values of their sum.

    Returns [batch, group] advantages.
    """
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
    """[N, C] log pi_theta / pi_old per token ("token"), or the mask-weighted mean over each
    sequence broadcast to its tokens ("sequence", the geometric-mean sequence ratio)."""
    log_ratio = logp - old_logp
    if level == "token":
        return log_ratio
    if level == "sequence":
        per_seq = (log_ratio * mask).sum(-1) / jnp.maximum(mask.sum(-1), 1.0)
        return jnp.broadcast_to(per_seq[:, None], log_ratio.shape)
    raise ValueError(f"grpo.importance_sampling_level: expected one of {IMPORTANCE_LEVELS}, "
                     f"got {level!r}")


def high_entropy_mask(entropy: jax.Array, mask: jax.Array, top_quantile: float) -> jax.Array:
    """[N, C] bool: the completion tokens whose entropy is at least the (1 - top_quantile)
    quantile (linear interpolation, as `np.quantile`) of the entropies under `mask`.

    The loss then keeps the top `top_quantile` fraction of tokens by entropy, the "forking"
    tokens that carry the learning signal (Wang et al. 2025, "Beyond the 80/20 Rule"; TRL's
    `top_entropy_quantile`); ties at the threshold are kept. The threshold carries no gradient.
    """
    values = jnp.where(mask > 0, jax.lax.stop_gradient(entropy), jnp.nan)
    threshold = jnp.nanquantile(values, 1.0 - top_quantile)
    return (entropy >= threshold) & (mask > 0)


def off_policy_sequence_mask(logp: jax.Array, old_logp: jax.Array, advantages: jax.Array,
                             mask: jax.Array, threshold: float) -> jax.Array:
    """[N, 1] 1.0 for the sequences kept by DeepSeek-V3.2's off-policy sequence masking
    (arXiv 2512.02556, eq. 9; TRL's `off_policy_mask_threshold`), 0.0 for those dropped:
    a sequence is dropped when its advantage is negative and the mean over its tokens of
    log pi_old - log pi_theta exceeds `threshold`, i.e. stale samples the policy has moved away
    from cannot push it further. The mask carries no gradient.

    Args:
      logp / old_logp: [N, C] log-probs under the policy being trained / the sampling policy.
      advantages: [N]; mask: [N, C] completion tokens.
    """
    drift = (old_logp - jax.lax.stop_gradient(logp)) * mask
    mean_drift = drift.sum(-1) / jnp.maximum(mask.sum(-1), 1.0)
    keep = (advantages >= 0) | (mean_drift <= threshold)
    return keep.astype(logp.dtype)[:, None]


DEFAULT_LOSS = LossSettings()  # GRPO's clipped surrogate, no KL term, DAPO's aggregation


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """The mean of `values` (broadcast to `mask`'s [N, C]) over the tokens under `mask`."""
    return (values * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def grpo_loss(logp: jax.Array, old_logp: jax.Array, ref_logp: jax.Array | None,
              advantages: jax.Array, mask: jax.Array, settings: LossSettings = DEFAULT_LOSS,
              *, off_policy: jax.Array | None = None, entropy: jax.Array | None = None,
              rollout_logp: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The GRPO objective as a loss to minimise, a pure function of arrays and `settings`.

    per_token = keep * w * term + beta * k3(logp, ref_logp) - entropy_coef * H, aggregated by
    `settings.loss_aggregation`. The term is `settings.loss_type`'s (`POLICY_TERMS`; by
    default -min(r A, clip(r, 1 - eps, 1 + eps_high) A)). keep is 1, times the
    `high_entropy_mask` with top_entropy_quantile < 1 and the `off_policy_sequence_mask` with
    off_policy_mask_threshold > 0 (the normaliser still counts every completion token, as
    TRL's). w are the rollout correction's weights (1 without; a term that folds them uses them
    itself). With use_bias_correction_kl the k3 term is weighted by the ratio, its gradient
    kept. Off-policy rows (mixed-policy GRPO) take -exp(logp) A unclipped as their term.

    Args:
      logp: [N, C] log-probs of the completion tokens under the policy being trained.
      old_logp: [N, C] under the policy that sampled them (`logp` with its gradient stopped
        when the batch gets one update).
      ref_logp: [N, C] under the reference policy; None when beta == 0.
      advantages: [N]; mask: [N, C] 1.0 on completion tokens.
      settings: the loss's settings (`LossSettings`).
      off_policy: [N] bool, the rows not sampled from the policy; None: none.
      entropy: [N, C] the policy's entropy at each position, needed with top_entropy_quantile
        < 1 or an entropy bonus.
      rollout_logp: [N, C] the sampler's own log-probs, needed when
        `settings.needs_rollout_logp` (the rollout correction's weights against `old_logp`;
        with rollout_dtype set, the off-policy mask's drift).
    Returns:
      (scalar loss, metrics: clip_fraction (= clip_fraction/region), clip_fraction/low and
      /high (ratio below / above 1), ratio_mean and the term's own statistics, each a mean
      over the sampled tokens; kl with beta > 0; entropy_kept_fraction with tokens selected by
      entropy; off_policy_masked_fraction, the sampled sequences dropped, with the mask).
    Raises:
      ValueError naming the key when an array the settings need is None.
    """
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
