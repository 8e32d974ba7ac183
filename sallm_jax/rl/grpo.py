"""GRPO: group-relative advantages and the clipped-ratio policy loss with a k3 KL penalty.

Shapes: N = batch x group completions, C = completion length.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from sallm_jax.rl.policy_terms import POLICY_TERMS, TERM_LEVELS, TermSettings, vespo_phi

ADVANTAGE_EPS = 1e-4


def group_advantages(rewards: jax.Array, scale: str = "group") -> jax.Array:
    """Advantages A = (r - mean_group) / (std + 1e-4) for rewards [batch, group].

    The standard deviation is the unbiased (ddof=1) one over the group (`scale="group"`), over the
    whole batch (`"batch"`), or not applied (`"none"`), as in common GRPO trainers.
    """
    centred = rewards - rewards.mean(axis=-1, keepdims=True)
    if scale == "none":
        return centred
    if scale == "group":
        std = rewards.std(axis=-1, ddof=1, keepdims=True)
    elif scale == "batch":
        std = rewards.std(ddof=1)
    else:
        raise ValueError(f"rl.scale_rewards: expected 'group', 'batch' or 'none', got {scale!r}")
    return centred / (std + ADVANTAGE_EPS)


MULTI_REWARD_NORMALIZATIONS = ("sum", "per_reward")


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
    valid = ~jnp.isnan(per_fn)
    rewards = jnp.where(valid, per_fn, 0.0)
    if scale not in ("group", "batch", "none"):
        raise ValueError(f"rl.scale_rewards: expected 'group', 'batch' or 'none', got {scale!r}")
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


def _aggregate_dapo(per_token: jax.Array, mask: jax.Array, max_len: int) -> jax.Array:
    return (per_token * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def _aggregate_grpo(per_token: jax.Array, mask: jax.Array, max_len: int) -> jax.Array:
    per_seq = (per_token * mask).sum(-1) / jnp.maximum(mask.sum(-1), 1.0)
    return per_seq.mean()


def _aggregate_dr_grpo(per_token: jax.Array, mask: jax.Array, max_len: int) -> jax.Array:
    return (per_token * mask).sum() / (per_token.shape[0] * max_len)


@dataclasses.dataclass(frozen=True)
class Aggregation:
    """A loss aggregation: `reduce(per_token [N, C], mask [N, C], max_len)` -> the loss, and
    whether its normaliser is the batch's token count (`per_token`: a micro-batch's share of
    the loss is then its share of the tokens) or a fixed count per row (an equal share)."""

    reduce: Callable[[jax.Array, jax.Array, int], jax.Array]
    per_token: bool


AGGREGATIONS: dict[str, Aggregation] = {
    "dapo": Aggregation(_aggregate_dapo, per_token=True),
    # identical to dapo on one host; differs from it only across processes
    "bnpo": Aggregation(_aggregate_dapo, per_token=True),
    "grpo": Aggregation(_aggregate_grpo, per_token=False),
    "dr_grpo": Aggregation(_aggregate_dr_grpo, per_token=False),
}


def micro_batch_weights(aggregation: str, masks: jax.Array) -> jax.Array:
    """[k] each micro-batch's share of the whole batch's loss under `aggregation`, from the
    micro-batches' completion masks [k, rows, C]: the weights that make the weighted sum of
    their losses the loss of the batch."""
    if AGGREGATIONS[aggregation].per_token:
        return masks.sum((1, 2)) / jnp.maximum(masks.sum(), 1)
    return jnp.full((masks.shape[0],), 1.0 / masks.shape[0])


IMPORTANCE_LEVELS = ("token", "sequence")


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
    raise ValueError(f"rl.importance_sampling_level: expected one of {IMPORTANCE_LEVELS}, "
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


def grpo_loss(
    logp: jax.Array,
    old_logp: jax.Array,
    ref_logp: jax.Array | None,
    advantages: jax.Array,
    mask: jax.Array,
    *,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    beta: float = 0.0,
    aggregation: str = "dapo",
    importance_sampling_level: str = "token",
    off_policy: jax.Array | None = None,
    loss_type: str = "grpo",
    delta: float | None = None,
    sapo_tau_pos: float = 1.0,
    sapo_tau_neg: float = 1.05,
    vespo_k_pos: float = 2.0,
    vespo_lambda_pos: float = 3.0,
    vespo_k_neg: float = 3.0,
    vespo_lambda_neg: float = 2.0,
    entropy: jax.Array | None = None,
    top_entropy_quantile: float = 1.0,
    entropy_coef: float | jax.Array = 0.0,
    off_policy_mask_threshold: float = 0.0,
    use_bias_correction_kl: bool = False,
    rollout_weights: jax.Array | None = None,
    sampler_logp: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The GRPO objective as a loss to minimise, a pure function of arrays.

    per_token = keep * w * policy term + beta * k3(logp, ref_logp) - entropy_coef * H; the
    policy term is `loss_type`'s (`POLICY_TERMS`), by default
    -min(ratio * A, clip(ratio, 1 - eps, 1 + eps_high) * A). keep is 1 everywhere, times
    the `high_entropy_mask` with `top_entropy_quantile` < 1 and the `off_policy_sequence_mask`
    with `off_policy_mask_threshold` > 0 (the aggregation's normaliser still counts every
    completion token, as in TRL); w is `rollout_weights` (1 without). H is the policy's
    entropy at each position. With `use_bias_correction_kl` the KL term is ratio * k3
    (DeepSeek-V3.2's unbiased KL estimate for samples drawn from pi_old; TRL's
    `use_bias_correction_kl`), the ratio's gradient kept.

    Off-policy rows (mixed-policy GRPO: ground-truth answers added to the group) use
    ratio = pi_theta(y_t) / pi_phi(y_t) with pi_phi = 1, i.e. exp(logp), and are not clipped:
    per_token = -exp(logp) * A (+ the same KL term).

    Args:
      logp: [N, C] log-probabilities of the completion tokens under the policy being trained.
      old_logp: [N, C] the same under the policy that sampled them (equal to `logp` with its
        gradient stopped when each rollout batch gets one update, so the ratio is exactly 1).
      ref_logp: [N, C] under the frozen reference policy, or None when beta == 0.
      advantages: [N] one advantage per completion.
      mask: [N, C] 1.0 on completion tokens (through the end-of-sequence token), else 0.
      epsilon / epsilon_high: lower / upper clip range (upper defaults to the lower).
      beta: KL weight; 0 ignores `ref_logp`.
      aggregation: "dapo" (tokens of the batch), "grpo" (per sequence, then mean),
        "dr_grpo" (sum / (N x C)) or "bnpo".
      importance_sampling_level: "token" or "sequence" (see `log_importance_weights`).
      off_policy: [N] bool, rows that were not sampled from the policy; None means none.
      loss_type: "grpo" (the clipped surrogate, `delta` capping it), "cispo", "sapo" (with
        `sapo_tau_pos` / `sapo_tau_neg`), "luspo" (needs the "sequence" level and the "grpo"
        aggregation) or "vespo" (with `vespo_*`; the "token" level); see
        `policy_terms.POLICY_TERMS`. A ValueError names the key of a mismatch.
      entropy: [N, C] the policy's entropy at each completion position (from the log-softmax
        that gave `logp`), needed when `top_entropy_quantile` < 1 or `entropy_coef` != 0.
      top_entropy_quantile: the fraction of completion tokens, by entropy, kept in the policy
        term; 1.0 keeps all.
      entropy_coef: weight of the entropy bonus (its gradient raises the entropy); an array
        (the adaptive coefficient, `entropy_control`) is applied whatever its value.
      off_policy_mask_threshold: > 0 drops the sampled sequences of negative advantage whose
        mean log pi_old - log pi_theta exceeds it (`off_policy_sequence_mask`); 0 keeps all.
      use_bias_correction_kl: weight the k3 term by the importance ratio (needs beta > 0).
      rollout_weights: [N, C] constant weights of the sampled rows' policy term, the rollout
        correction (`rollout_correction.rollout_correction_weights`); None: none.
      sampler_logp: [N, C] the sampler's own log-probs when they differ from `old_logp`'s
        (a rollout at another precision): the off-policy sequence mask then measures the drift
        from them, as TRL's does from vLLM's; None: from `old_logp`.
    Returns:
      (scalar loss, metrics: kl, clip_fraction (= clip_fraction/region: the tokens where the
      term cut the ratio's gradient), clip_fraction/low (ratio < 1, the lower bound binding),
      clip_fraction/high (ratio > 1), ratio_mean — mask-weighted means over the on-policy
      tokens — entropy_kept_fraction when tokens are selected by entropy, and
      off_policy_masked_fraction, the sampled sequences dropped, when they are masked, and
      vespo/phi_mean, VESPO's kernel over the on-policy tokens, with loss_type "vespo").
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"rl.loss_aggregation: expected one of {sorted(AGGREGATIONS)}, "
                         f"got {aggregation!r}")
    if loss_type not in POLICY_TERMS:
        raise ValueError(f"rl.loss_type: expected one of {sorted(POLICY_TERMS)}, "
                         f"got {loss_type!r}")
    if TERM_LEVELS.get(loss_type, importance_sampling_level) != importance_sampling_level:
        raise ValueError(f"rl.importance_sampling_level: {TERM_LEVELS[loss_type]!r} with "
                         f"rl.loss_type={loss_type!r}, got {importance_sampling_level!r}")
    if loss_type == "luspo" and aggregation != "grpo":
        raise ValueError(f"rl.loss_aggregation: 'grpo' with rl.loss_type='luspo' (the mean of "
                         f"the length-scaled sequence terms), got {aggregation!r}")
    eps_high = epsilon if epsilon_high is None else epsilon_high
    mask = mask.astype(logp.dtype)
    log_ratio = log_importance_weights(logp, old_logp, mask, importance_sampling_level)
    ratio = jnp.exp(log_ratio)
    adv = advantages[:, None]
    # VESPO folds the rollout weights into its sequence weight; the others weigh the term.
    folded = rollout_weights is not None and loss_type == "vespo"
    settings = TermSettings(
        epsilon=epsilon, epsilon_high=eps_high, delta=delta, tau_pos=sapo_tau_pos,
        tau_neg=sapo_tau_neg, vespo_k_pos=vespo_k_pos, vespo_lambda_pos=vespo_lambda_pos,
        vespo_k_neg=vespo_k_neg, vespo_lambda_neg=vespo_lambda_neg,
        log_weights=jnp.log(jax.lax.stop_gradient(rollout_weights)) if folded else None)
    per_token, cut = POLICY_TERMS[loss_type](logp, log_ratio, adv, mask, settings)
    if off_policy_mask_threshold > 0:  # before the ground-truth rows, which it never drops
        sampler = old_logp if sampler_logp is None else sampler_logp
        kept = off_policy_sequence_mask(logp, sampler, advantages, mask,
                                        off_policy_mask_threshold)
        per_token = per_token * kept
    if rollout_weights is not None and not folded:
        per_token = per_token * jax.lax.stop_gradient(rollout_weights)
    on_policy_mask = mask
    if off_policy is not None:
        per_token = jnp.where(off_policy[:, None], -jnp.exp(logp) * adv, per_token)
        on_policy_mask = mask * ~off_policy[:, None]
    denom = jnp.maximum(on_policy_mask.sum(), 1.0)
    metrics = {
        "clip_fraction": (cut * on_policy_mask).sum() / denom,
        "clip_fraction/low": (cut * (log_ratio < 0) * on_policy_mask).sum() / denom,
        "clip_fraction/high": (cut * (log_ratio > 0) * on_policy_mask).sum() / denom,
        "clip_fraction/region": (cut * on_policy_mask).sum() / denom,
        "ratio_mean": (ratio * on_policy_mask).sum() / denom,
    }
    if loss_type == "vespo":
        phi = vespo_phi(log_ratio, adv, mask, settings)
        metrics["vespo/phi_mean"] = (phi * on_policy_mask).sum() / denom
    bonus = isinstance(entropy_coef, jax.Array) or entropy_coef != 0.0
    if (top_entropy_quantile < 1.0 or bonus) and entropy is None:
        raise ValueError("rl.top_entropy_quantile / rl.entropy_coef need the policy's entropy")
    if off_policy_mask_threshold > 0:
        sampled = on_policy_mask.max(-1)
        metrics["off_policy_masked_fraction"] = (
            ((1.0 - kept[:, 0]) * sampled).sum() / jnp.maximum(sampled.sum(), 1.0))
    if top_entropy_quantile < 1.0:
        keep = high_entropy_mask(entropy, mask, top_entropy_quantile)
        per_token = per_token * keep
        metrics["entropy_kept_fraction"] = keep.sum() / jnp.maximum(mask.sum(), 1.0)
    if bonus:
        per_token = per_token - entropy_coef * entropy
    if beta != 0.0:
        kl = k3_kl(logp, ref_logp) * (ratio if use_bias_correction_kl else 1.0)
        per_token = per_token + beta * kl
        metrics["kl"] = (kl * mask).sum() / jnp.maximum(mask.sum(), 1.0)
    loss = AGGREGATIONS[aggregation].reduce(per_token, mask, logp.shape[1])
    return loss, metrics
