"""Mixed-policy GRPO: ground-truth answers join each group as off-policy samples.

Each group of G holds G - k completions sampled from the policy and k copies of the reference
answer (the SFT target: answer tokens + end token). All G rewards are normalised together; the
loss treats the k rows with pi_phi = 1 and no clipping (see `grpo_loss`).
"""

from __future__ import annotations

import numpy as np


def join_groups(sampled: np.ndarray, refs: np.ndarray, num_off_policy: int) -> np.ndarray:
    """[B * n, ...] sampled rows and [B, ...] references -> [B * (n + num_off_policy), ...],
    prompt-major, each reference repeated `num_off_policy` times at the end of its group."""
    b = refs.shape[0]
    n = sampled.shape[0] // b
    sampled = sampled.reshape(b, n, *sampled.shape[1:])
    refs = np.repeat(refs[:, None], num_off_policy, axis=1).astype(sampled.dtype)
    return np.concatenate([sampled, refs], axis=1).reshape(b * (n + num_off_policy),
                                                           *sampled.shape[2:])


def mix_in_references(ids: np.ndarray, mask: np.ndarray, truncated: np.ndarray,
                      target_ids: np.ndarray, target_mask: np.ndarray,
                      num_off_policy: int) -> tuple[np.ndarray, ...]:
    """Append `num_off_policy` reference rows to every group.

    Args:
      ids, mask: [B * n, C] sampled completions (prompt-major, n per prompt).
      truncated: [B * n] bool.
      target_ids, target_mask: [B, C] reference answers, right-padded to the same C.
    Returns:
      (ids, mask, truncated, off_policy) with B * (n + num_off_policy) rows, prompt-major, the
      references last in each group; off_policy is [rows] bool.
    """
    b, c = target_ids.shape
    if ids.shape[1] != c:
        raise ValueError(f"completion length {ids.shape[1]} differs from the target length {c}")
    k = num_off_policy
    off_policy = join_groups(np.zeros(len(ids), bool), np.ones(b, bool), k)
    # A reference is ground truth, never a truncated sample, even when cut to C tokens.
    return (join_groups(ids, target_ids, k), join_groups(mask, target_mask, k),
            join_groups(truncated, np.zeros(b, bool), k), off_policy)
