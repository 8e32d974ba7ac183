"""Gradient accumulation over micro-batches of prompts inside one compiled step. B prompts
(`rows_per_prompt` rows each: G in GRPO, 1 in SFT) are cut into k micro-batches, micro-batch j
taking prompts j, j + k, ... (each device keeps its rows). The losses divide by a batch-wide count,
so weighting each micro-batch by its share of it gives exactly the full-batch loss and gradient."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def split_prompts(tree, num_chunks: int, rows_per_prompt: int = 1):
    """Leading axis [B * rows_per_prompt, ...] -> [num_chunks, B / num_chunks * rows, ...]."""

    def split(x):
        b = x.shape[0] // rows_per_prompt
        if b % num_chunks:
            raise ValueError(f"{b} prompts do not split into {num_chunks} micro-batches")
        x = x.reshape(b // num_chunks, num_chunks, rows_per_prompt, *x.shape[1:])
        return jnp.swapaxes(x, 0, 1).reshape(num_chunks, -1, *x.shape[3:])

    return jax.tree.map(split, tree)


def join_prompts(x: jax.Array, rows_per_prompt: int = 1) -> jax.Array:
    """Inverse of `split_prompts` for one array: [k, B / k * rows, ...] -> [B * rows, ...]."""
    k = x.shape[0]
    x = x.reshape(k, -1, rows_per_prompt, *x.shape[2:])
    return jnp.swapaxes(x, 0, 1).reshape(-1, *x.shape[3:])


def accumulate(grad_fn: Callable, params, chunks, weights: jax.Array, *,
               per_chunk: bool = False):
    """Sum over j of weights[j] x (loss, metrics, grads) of `grad_fn(params, chunks[j])`.

    `grad_fn`: (params, chunk) -> ((loss, metrics), grads), e.g. `jax.value_and_grad(...,
    has_aux=True)`; `chunks`: leaves with a leading micro-batch axis; `weights`: [num_chunks], each
    micro-batch's share of the batch-wide normaliser. With `per_chunk`, `grad_fn` returns ((loss,
    (metrics, outputs)), grads) and `outputs` come back stacked (leaves [num_chunks, ...]).
    """

    def body(acc, xs):
        chunk, weight = xs
        (loss, aux), grads = grad_fn(params, chunk)
        metrics, outputs = aux if per_chunk else (aux, None)
        scaled = jax.tree.map(lambda a, g: a + weight * g, acc[2], grads)
        metrics = jax.tree.map(lambda a, m: a + weight * m, acc[1], metrics)
        return (acc[0] + weight * loss, metrics, scaled), outputs

    (loss, aux), _ = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], chunks))
    metrics = aux[0] if per_chunk else aux
    zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), (loss, metrics, params))
    (loss, metrics, grads), outputs = jax.lax.scan(body, zeros, (chunks, weights))
    return ((loss, (metrics, outputs)) if per_chunk else (loss, metrics)), grads
