"""Loss aggregations (`grpo.loss_aggregation`) of a per-token loss [N rows, C tokens]."""

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
    """`reduce(per_token [N, C], mask [N, C], max_len)` -> the scalar loss.

    `per_token`: normalised by tokens (a micro-batch's share is its token share), else by rows."""

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
    """[k] each micro-batch's share of the batch loss under `aggregation`; `masks` [k, rows, C]."""
    if AGGREGATIONS[aggregation].per_token:
        return masks.sum((1, 2)) / jnp.maximum(masks.sum(), 1)
    return jnp.full((masks.shape[0],), 1.0 / masks.shape[0])
