"""A reference policy that moves (TR-DPO, Gorbatovski et al. 2024, arXiv 2404.09656; TRL's
`sync_ref_model`): every `grpo.ref_model_sync_steps` optimiser updates the KL term's reference
becomes a mix of itself and the policy,

    pi_ref <- alpha x pi_theta + (1 - alpha) x pi_ref     (alpha = `grpo.ref_model_mixup_alpha`),

a soft update of the weights (alpha = 1: the hard update, a copy of the policy). The moving
reference is a second set of weights, kept in the train state's `extras` under `REFERENCE_KEY`
and checkpointed with it, so a resumed stage goes on from the same reference. Under LoRA the
reference is the base model with the adapters off, which has no weights of its own to move;
the GRPO stage's checks (`stages/grpo.py`) refuse the option there.
"""

from __future__ import annotations

from typing import Any

import jax

REFERENCE_KEY = "reference"


def mixed_reference(reference: Any, policy: Any, alpha: float) -> Any:
    """The reference after a sync: alpha x policy + (1 - alpha) x reference, leaf by leaf, in
    each reference leaf's dtype (`reference` and `policy` are pytrees of the same structure)."""
    return jax.tree.map(lambda r, p: (alpha * p + (1.0 - alpha) * r).astype(r.dtype),
                        reference, policy)


def sync_due(update: int, every: int) -> bool:
    """Whether the reference syncs after optimiser update `update` (1-based, the train state's
    counter): every `every` updates, as TRL's callback at `global_step % ref_model_sync_steps
    == 0`."""
    return update % every == 0
