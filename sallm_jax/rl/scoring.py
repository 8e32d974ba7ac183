"""A GRPO rollout on the host: decode, add ground-truth rows, score; the logged statistics."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import jax
import numpy as np

from sallm_jax.data.manifest import ManifestRow
from sallm_jax.rl.diagnostics import completion_length_range
from sallm_jax.rl.mixed_policy import join_groups, mix_in_references
from sallm_jax.rl.rewards import RewardFn, compute_rewards, get_reward_fns
from sallm_jax.rl.rollout import Rollout
from sallm_jax.rl.settings import check
from sallm_jax.runtime.user_errors import ConfigError

if TYPE_CHECKING:
    from sallm_jax.parallel.partitioner import Partitioner


def decode_completions(tokenizer, ids: np.ndarray, mask: np.ndarray) -> list[str]:
    """Text of each completion row, special tokens (the end token) removed."""
    return [tokenizer.decode(row[: int(m.sum())], skip_special_tokens=True).strip()
            for row, m in zip(ids, mask, strict=True)]


def local_rollout(out: Rollout, partitioner: Partitioner) -> Rollout:
    """This process's rows of a rollout as NumPy arrays (what `score_groups` reads)."""
    return Rollout(*(None if x is None else partitioner.to_local(x) for x in out))


@dataclasses.dataclass(frozen=True)
class RewardSettings:
    """The reward `grpo` keys; `fns` resolved once (a ConfigError names the bad key)."""

    reward_fns: tuple[str, ...] = ("bleu",)
    reward_weights: tuple[float, ...] = (1.0,)
    reward_failure_value: float = 0.0  # the reward of a sample whose function raised
    fns: tuple[RewardFn, ...] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        names, weights = tuple(self.reward_fns), tuple(self.reward_weights)
        check(len(weights) == len(names), "reward_weights",
              f"{len(names)} weights, one per entry of grpo.reward_fns", weights)
        try:
            fns = get_reward_fns(names)
        except ValueError as error:  # its message names grpo.reward_fns
            raise ConfigError(str(error)) from error
        object.__setattr__(self, "fns", tuple(fns))


@dataclasses.dataclass
class ScoredGroups:
    """One rollout batch on the host: B prompts x G completions, prompt-major."""

    ids: np.ndarray  # [B * G, C]
    mask: np.ndarray  # [B * G, C]
    truncated: np.ndarray  # [B * G] bool
    off_policy: np.ndarray  # [B * G] bool, ground-truth rows of mixed-policy GRPO
    texts: list[str]
    examples: list[dict]
    rewards: np.ndarray  # [B * G] weighted sum
    per_fn: np.ndarray  # [B * G, num reward functions], NaN where a reward does not apply
    failures: dict[str, int]
    first_errors: dict[str, BaseException]
    rollout_logp: np.ndarray | None = None  # [B * G, C] the sampler's; 0 on off-policy rows

    def loss_mask(self, mask_truncated: bool) -> np.ndarray:
        """[B * G, C] the loss tokens, without truncated samples when `mask_truncated`."""
        return self.mask * ~self.truncated[:, None] if mask_truncated else self.mask

    def device_group(self, group_size: int, *, mask_truncated: bool, per_reward: bool,
                     partitioner: Partitioner) -> dict[str, jax.Array]:
        """What the update consumes: "ids", "mask" (`loss_mask`), "rewards" [B, G],
        "off_policy", with `per_reward` "per_fn" [B, G, F], and "rollout_logp" when held."""
        group = {"ids": self.ids, "mask": self.loss_mask(mask_truncated),
                 "rewards": self.rewards.reshape(-1, group_size),
                 "off_policy": self.off_policy}
        if per_reward:
            group["per_fn"] = self.per_fn.reshape(-1, group_size, self.per_fn.shape[1])
        if self.rollout_logp is not None:
            group["rollout_logp"] = self.rollout_logp
        return partitioner.to_global(group)


def score_groups(local: Rollout, host_batch: dict, rows: Sequence[ManifestRow], tokenizer,
                 rewards: RewardSettings, *, group_size: int,
                 num_off_policy: int = 0) -> ScoredGroups:
    """Score this process's rows (`local_rollout`) after adding `num_off_policy` ground truths.

    Groups of `group_size` rows, ground truth included; a skipped prompt's rows get mask 0."""
    ids, mask, truncated, logp = local
    off_policy = np.zeros(len(ids), bool)
    if num_off_policy:
        if logp is not None:
            logp = join_groups(logp, np.zeros((len(host_batch["target_ids"]), logp.shape[1]),
                                              logp.dtype), num_off_policy)
        ids, mask, truncated, off_policy = mix_in_references(
            ids, mask, truncated, host_batch["target_ids"], host_batch["target_mask"],
            num_off_policy)
    # A prompt whose example was skipped (bad audio, "skip" policy) leaves the loss.
    mask = mask * np.repeat(host_batch["valid"], group_size)[:, None]
    texts = decode_completions(tokenizer, ids, mask)
    examples = [dataclasses.asdict(rows[i])
                for i in np.repeat(host_batch["index"], group_size)]
    total, per_fn, failures, first_errors = compute_rewards(
        rewards.fns, rewards.reward_weights, texts, examples,
        failure_value=rewards.reward_failure_value, names=list(rewards.reward_fns))
    return ScoredGroups(ids, mask, truncated, off_policy, texts, examples, total, per_fn,
                        failures, first_errors, logp)


def gathered_failures(groups: ScoredGroups,
                      partitioner: Partitioner) -> tuple[dict[str, int], int]:
    """(per reward, the samples it failed on this step over all processes; their number)."""
    names = list(groups.failures)
    counts = partitioner.gather(np.array([[groups.failures[n] for n in names]])).sum(0)
    total = int(partitioner.gather(np.array([len(groups.texts)])).sum())
    return dict(zip(names, counts.tolist(), strict=True)), total


def frac_equal_reward_groups(rewards: np.ndarray, group_size: int) -> float:
    """Fraction of groups whose rewards [B * G] are all equal (TRL's `frac_reward_zero_std`)."""
    groups = rewards.reshape(-1, group_size)
    return float((groups.max(1) == groups.min(1)).mean())


def rollout_scalars(groups: ScoredGroups, group_size: int, reward_names: Sequence[str],
                    partitioner: Partitioner) -> dict[str, float]:
    """Reward and length statistics of the sampled rows of the groups in the loss (all if none)."""
    mask = partitioner.gather(groups.mask)
    in_loss = mask.reshape(-1, group_size * mask.shape[1]).any(1)
    in_loss |= not in_loss.any()  # none in the loss: the statistics of what was scored
    on = partitioner.gather(~groups.off_policy) & np.repeat(in_loss, group_size)
    rewards, per_fn = partitioner.gather(groups.rewards)[on], partitioner.gather(groups.per_fn)[on]
    lengths = mask.sum(1)[on]
    grouped = partitioner.gather(groups.rewards).reshape(-1, group_size)[in_loss]
    scalars = {"reward_mean": rewards.mean(), "reward_std": rewards.std(),
               "frac_reward_zero_std": frac_equal_reward_groups(grouped.reshape(-1),
                                                                group_size),
               "completion_length": lengths.mean(),
               "truncated_fraction": partitioner.gather(groups.truncated)[on].mean(),
               "completion_tokens": lengths.sum(), **completion_length_range(lengths)}
    for i, name in enumerate(reward_names):
        applies = ~np.isnan(per_fn[:, i])  # None: the reward does not apply to the sample
        if applies.any():
            scalars[f"reward/{name}"] = per_fn[applies, i].mean()
    names = list(groups.failures)
    failures = partitioner.gather(np.array([[groups.failures[n] for n in names]])).sum(0)
    scalars.update({f"reward_failures/{n}": c for n, c in zip(names, failures, strict=True) if c})
    return scalars


def completions_table(groups: ScoredGroups, advantages: np.ndarray, reward_names: Sequence[str],
                      group_size: int) -> list[dict]:
    """This process's groups as records of TRL's completions table (none for a skipped prompt).

    Each: id, question, reference, and per sample completion, reward (weighted sum), per-function
    rewards (None: not applicable), advantage (`advantages` [B * G]) and off_policy."""
    records = []
    for first in range(0, len(groups.texts), group_size):
        rows = range(first, first + group_size)
        if not groups.mask[first:first + group_size].any():
            continue
        example = groups.examples[first]
        records.append({
            "id": example["id"], "question": example["question"], "reference": example["answer"],
            "samples": [{"completion": groups.texts[i], "reward": float(groups.rewards[i]),
                         "rewards": {n: None if np.isnan(v) else float(v)
                                     for n, v in zip(reward_names, groups.per_fn[i],
                                                     strict=True)},
                         "advantage": float(advantages[i]),
                         "off_policy": bool(groups.off_policy[i])} for i in rows]})
    return records
