"""A moving reference (TR-DPO, Gorbatovski et al. 2024, arXiv 2404.09656; TRL's `sync_ref_model`).

Every `grpo.ref_model_sync_steps` updates pi_ref <- alpha x pi_theta + (1 - alpha) x pi_ref
(alpha = `grpo.ref_model_mixup_alpha`), checkpointed in the train state's `extras[REFERENCE_KEY]`.
Not under LoRA (`stages/grpo.py` refuses it)."""

from __future__ import annotations

from typing import Any

import jax

REFERENCE_KEY = "reference"


def mixed_reference(reference: Any, policy: Any, alpha: float) -> Any:
    """alpha x policy + (1 - alpha) x reference, leaf by leaf, in the reference's dtypes."""
    return jax.tree.map(lambda r, p: (alpha * p + (1.0 - alpha) * r).astype(r.dtype),
                        reference, policy)


def sync_due(update: int, every: int) -> bool:
    """Whether the reference syncs after update `update` (1-based): TRL's `update % every == 0`."""
    return update % every == 0
