"""DAPO's dynamic sampling (Yu et al. 2025, arXiv 2503.14476, section 3.2), host side.

Groups whose G rewards are equal have zero advantages. Prompts are drawn until kept groups fill
the batch or `grpo.dynamic_sampling_max_draws` runs out; dropped groups, "valid" False (out of
the loss), fill the rest. Arrays are global (every process's rows, process-major)."""

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
    """[B] whether each group has a reward spread (DAPO's 0 < |correct| < G) and loss tokens.

    `rewards` [B * G] prompt-major; `per_fn` [B * G, F] (NaN: not applicable), read with
    `per_reward` (GDPO: any function's applicable values differ); `mask` [B * G, C]."""
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
    """(draw, slot) [batch_size, 2] of the groups making a batch, and [batch_size] in-loss flags.

    Kept groups (`keep[d]` [B_d] bool) first in draw order, surplus cut (as verl), then dropped
    ones, out of the loss. ValueError when the draws hold fewer than `batch_size` groups."""
    kept = [(d, s) for d, k in enumerate(keep) for s in np.flatnonzero(k)]
    dropped = [(d, s) for d, k in enumerate(keep) for s in np.flatnonzero(~k)]
    if len(kept) + len(dropped) < batch_size:
        raise ValueError(f"{len(kept) + len(dropped)} groups drawn for a batch of {batch_size}")
    picks = np.array((kept + dropped)[:batch_size], np.int64).reshape(batch_size, 2)
    return picks, np.arange(batch_size) < len(kept)


def padded(host: dict[str, np.ndarray], prompt_length: int, width: int | None,
           pad_id: int) -> dict[str, np.ndarray]:
    """`host` with prompts left-padded to `prompt_length` (`pad_id`), waveforms right to `width`."""
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
    """(host batch, Rollout) of `pick_groups`' `picks` [K, 2] and `in_loss` [K] from the draws.

    Prompts are padded to the largest draw in `shape_of` (default `picks`; pass the whole batch's
    picks so every process gets one shape); `rollouts[d]` rows are [B_d * n, ...], prompt-major."""
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
