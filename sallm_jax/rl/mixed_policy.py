"""Mixed-policy GRPO: k reference answers (SFT targets) join each group of G as off-policy rows."""

from __future__ import annotations

import numpy as np


def join_groups(sampled: np.ndarray, refs: np.ndarray, num_off_policy: int) -> np.ndarray:
    """[B * n, ...] sampled, [B, ...] refs -> [B * (n + k), ...], k refs ending each group."""
    b = refs.shape[0]
    n = sampled.shape[0] // b
    sampled = sampled.reshape(b, n, *sampled.shape[1:])
    refs = np.repeat(refs[:, None], num_off_policy, axis=1).astype(sampled.dtype)
    return np.concatenate([sampled, refs], axis=1).reshape(b * (n + num_off_policy),
                                                           *sampled.shape[2:])


def mix_in_references(ids: np.ndarray, mask: np.ndarray, truncated: np.ndarray,
                      target_ids: np.ndarray, target_mask: np.ndarray,
                      num_off_policy: int) -> tuple[np.ndarray, ...]:
    """Append `num_off_policy` reference rows to every group (`join_groups`).

    `ids`, `mask` [B * n, C] prompt-major, `truncated` [B * n]; `target_ids`, `target_mask` [B, C]
    (ValueError unless C matches). Returns (ids, mask, truncated, off_policy [rows] bool)."""
    b, c = target_ids.shape
    if ids.shape[1] != c:
        raise ValueError(f"completion length {ids.shape[1]} differs from the target length {c}")
    k = num_off_policy
    off_policy = join_groups(np.zeros(len(ids), bool), np.ones(b, bool), k)
    # A reference is ground truth, never a truncated sample, even when cut to C tokens.
    return (join_groups(ids, target_ids, k), join_groups(mask, target_mask, k),
            join_groups(truncated, np.zeros(b, bool), k), off_policy)
