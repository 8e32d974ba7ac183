"""Loss aggregations (`grpo.loss_aggregation`): a per-token loss [N, C] under a completion mask
[N, C] -> the scalar loss, and the share of it each micro-batch carries.

Shapes: N = batch x group completions, C = completion length.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp


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
