"""DAPO's dynamic sampling (Yu et al. 2025, arXiv 2503.14476, section 3.2), the host-side parts:
which groups carry a signal, which of the drawn groups fill a batch, and the filled batch.

A group whose G rewards are all equal has every group-relative advantage 0, so it teaches
nothing. Dynamic sampling draws batches of prompts until the kept groups fill the training
batch (or `grpo.dynamic_sampling_max_draws` draws are spent), and trains on the kept ones.

Shapes stay static under jit: the filled batch always holds B prompts. When the draws run out
before B groups are kept, the missing slots hold dropped groups marked invalid (`"valid"`
False), which leave the loss as an example the bad-input policy skipped does (mask 0: no policy
term, no KL, not in any token count). Prompts of draws from different audio-length buckets are
padded to the largest of the picked draws' shapes (waveforms on the right with zeros, prompts
on the left with the pad id), which the masks make the same computation.

All functions here act on global arrays (every process's rows, process-major), so every process
computes the same choice.
"""

from __future__ import annotations

import numpy as np

from sallm_jax.rl.rollout import Rollout

# Host-batch keys of a filled batch's statistics (kept with the batch, so a resumed generation
# logs them again): prompts drawn, prompts short of the batch, drawn groups without spread.
DRAWN_PROMPTS, SHORTFALL, DRAWN_FLAT = "drawn/prompts", "drawn/shortfall", "drawn/flat_groups"
DRAWN_FAILURES, DRAWN_SCORED = "drawn/failures", "drawn/scored"
DRAWN_KEYS = (DRAWN_PROMPTS, SHORTFALL, DRAWN_FLAT, DRAWN_FAILURES, DRAWN_SCORED)


def groups_with_signal(rewards: np.ndarray, per_fn: np.ndarray, mask: np.ndarray,
                       group_size: int, per_reward: bool) -> np.ndarray:
    """[B] whether each group's rewards have a spread (DAPO's 0 < |{correct}| < G, for any
    reward: std > 0) and it has completion tokens in the loss.

    Args:
      rewards: [B * G] the weighted sum of the rewards, prompt-major. Mixed-policy groups'
        ground-truth rows count like the sampled ones: they are group members in the
        advantages, so a group whose samples all fail and whose reference scores keeps a signal.
      per_fn: [B * G, F] each reward function's value, NaN where it does not apply.
      mask: [B * G, C] the completion tokens (0 for a prompt left out of the loss).
      per_reward: GDPO (`multi_reward_normalization="per_reward"`): a group is kept when any
        reward function's applicable values differ within it (its GDPO advantages are then not
        all 0); otherwise when the weighted sums differ.
    """
    has_tokens = mask.reshape(-1, group_size * mask.shape[-1]).any(-1)
    if not per_reward:
        grouped = rewards.reshape(-1, group_size)
        return (grouped.max(1) != grouped.min(1)) & has_tokens
    grouped = per_fn.reshape(-1, group_size, per_fn.shape[-1])
    applies = ~np.isnan(grouped)
    high = np.where(applies, grouped, -np.inf).max(1)
    low = np.where(applies, grouped, np.inf).min(1)
    return ((applies.sum(1) >= 2) & (high != low)).any(-1) & has_tokens


def pick_groups(keep: list[np.ndarray], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The groups that make a batch of `batch_size` prompts from the draws' keep masks
    (`keep[d]` [B_d] bool): ([batch_size, 2] (draw, slot) of each, [batch_size] whether it is
    in the loss). The kept groups come first, in draw order (the first `batch_size`; verl
    likewise cuts the surplus of the last draw); a shortfall is made up of dropped groups in
    draw order, not in the loss. Raises ValueError when the draws hold fewer than
    `batch_size` groups."""
    kept = [(d, s) for d, k in enumerate(keep) for s in np.flatnonzero(k)]
    dropped = [(d, s) for d, k in enumerate(keep) for s in np.flatnonzero(~k)]
    if len(kept) + len(dropped) < batch_size:
        raise ValueError(f"{len(kept) + len(dropped)} groups drawn for a batch of {batch_size}")
    picks = np.array((kept + dropped)[:batch_size], np.int64).reshape(batch_size, 2)
    return picks, np.arange(batch_size) < len(kept)


def padded(host: dict[str, np.ndarray], prompt_length: int, width: int | None,
           pad_id: int) -> dict[str, np.ndarray]:
    """A host batch with prompts left-padded to `prompt_length` tokens ("prompt_ids" with
    `pad_id`, "prompt_mask" with 0) and "waveforms" right-padded with zeros to `width`
    samples; `width` None: a batch of text-only prompts. Other arrays are unchanged."""
    out = dict(host)
    extra = prompt_length - host["prompt_ids"].shape[1]
    if extra < 0 or (width is not None and width < host["waveforms"].shape[1]):
        raise ValueError("padded: the target shape is smaller than the batch's")
    out["prompt_ids"] = np.pad(host["prompt_ids"], ((0, 0), (extra, 0)), constant_values=pad_id)
    out["prompt_mask"] = np.pad(host["prompt_mask"], ((0, 0), (extra, 0)))
    if width is not None:
        out["waveforms"] = np.pad(host["waveforms"],
                                  ((0, 0), (0, width - host["waveforms"].shape[1])))
    return out


def take_groups(hosts: list[dict[str, np.ndarray]], rollouts: list[Rollout], picks: np.ndarray,
                in_loss: np.ndarray, pad_id: int,
                shape_of: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], Rollout]:
    """The batch `pick_groups` chose: (host batch [len(picks)], its sampled rows).

    `hosts[d]` is draw d's host batch and `rollouts[d]` its sampled rows ([B_d * n, ...],
    prompt-major, n per prompt), both over the same prompts; `picks` [K, 2] (draw, slot) and
    `in_loss` [K] as `pick_groups` returns them (or a process's slice of them). The prompts are
    padded to the largest shape of the draws in `shape_of` [M, 2] (default `picks`: every
    process passes the whole batch's picks, so that all take the same shape); a slot not in
    the loss has "valid" False.
    """
    used = sorted(set((picks if shape_of is None else shape_of)[:, 0].tolist()))
    length = max(hosts[d]["prompt_ids"].shape[1] for d in used)
    width = (max(hosts[d]["waveforms"].shape[1] for d in used)
             if "waveforms" in hosts[used[0]] else None)
    same = [padded(h, length, width, pad_id) if d in used else h for d, h in enumerate(hosts)]
    keys = [k for k in same[used[0]] if k not in DRAWN_KEYS]
    host = {k: np.stack([same[d][k][s] for d, s in picks]) for k in keys}
    host["valid"] = host["valid"] & in_loss
    n = len(rollouts[0].ids) // len(hosts[0]["prompt_ids"])
    fields = {}
    for name in Rollout._fields:
        if getattr(rollouts[0], name) is None:
            fields[name] = None
            continue
        fields[name] = np.concatenate([np.asarray(getattr(rollouts[d], name))[s * n:(s + 1) * n]
                                       for d, s in picks])
    return host, Rollout(**fields)
