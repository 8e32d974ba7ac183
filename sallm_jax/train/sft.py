"""Supervised fine-tuning: cross-entropy on the answer tokens only (prompt and audio excluded)."""

from __future__ import annotations

import logging
import pathlib
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from sallm_jax.data.bad_input import SkipLog
from sallm_jax.data.manifest import ManifestRow
from sallm_jax.data.pipeline import BatchSpec, training_dataset
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.rl.policy import completion_logprobs, merge_policy
from sallm_jax.train.checkpoint import Checkpointer
from sallm_jax.train.metric_writer import MetricWriter
from sallm_jax.train.state import TrainState, apply_gradients, make_optimizer

DEVICE_KEYS = ("waveforms", "num_samples", "prompt_ids", "prompt_mask", "target_ids",
               "target_mask", "valid")


def device_batch(batch: dict, partitioner: Partitioner) -> dict[str, jax.Array]:
    """The arrays a jitted step consumes, as global arrays split along the batch axis
    (host-only bookkeeping such as "index" stays behind)."""
    return partitioner.to_global({k: batch[k] for k in DEVICE_KEYS if k in batch})


def sft_loss(params: nnx.State, frozen: nnx.State, graphdef: nnx.GraphDef,
             batch: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean token cross-entropy of the targets given prompt and audio."""
    model = merge_policy(graphdef, params, frozen)
    logp = completion_logprobs(model, batch, batch["target_ids"], batch["target_mask"])
    mask = batch["target_mask"] * batch["valid"][:, None]
    tokens = jnp.maximum(mask.sum(), 1)
    loss = -(logp * mask).sum() / tokens
    return loss, {"loss": loss, "target_tokens": mask.sum()}


def make_sft_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                  partitioner: Partitioner, state_shardings: TrainState,
                  frozen_shardings: nnx.State):
    """jit(step(state, frozen, batch) -> (state, metrics)); the state's buffers are donated."""

    def step(state: TrainState, frozen: nnx.State, batch: dict[str, jax.Array]):
        grad_fn = jax.value_and_grad(sft_loss, has_aux=True)
        (_, metrics), grads = grad_fn(state.params, frozen, graphdef, batch)
        metrics["grad_norm"] = optax.global_norm(grads)
        return apply_gradients(state, grads, tx), metrics

    return jax.jit(step, in_shardings=(state_shardings, frozen_shardings, partitioner.batch),
                   out_shardings=(state_shardings, partitioner.replicated), donate_argnums=0)


def run_sft(cfg: ml_collections.ConfigDict, *, graphdef: nnx.GraphDef, params: nnx.State,
            frozen: nnx.State,
            rows: Sequence[ManifestRow], tokenizer, spec: BatchSpec, workdir: pathlib.Path,
            seed: int, partitioner: Partitioner, skip_log: SkipLog | None = None,
            num_workers: int = 0) -> nnx.State:
    """Train for `cfg.steps` steps, resuming from the stage's latest checkpoint; returns params.

    `params` are what trains (all parameters, or the LoRA adapters and what the config adds),
    `frozen` the rest of the model state. `spec.batch_size` is this process's share of the
    batch. `params` are consumed: the first update donates their buffers.
    """
    tx = make_optimizer(learning_rate=cfg.learning_rate, warmup_steps=cfg.warmup_steps,
                        total_steps=cfg.steps, weight_decay=cfg.weight_decay,
                        max_grad_norm=cfg.max_grad_norm)
    state, state_shardings = partitioner.train_state(params, tx)
    data_iter = iter(training_dataset(rows, tokenizer, spec, num_batches=cfg.steps, seed=seed,
                                      process_index=jax.process_index(),
                                      process_count=jax.process_count(), skip_log=skip_log,
                                      num_workers=num_workers))
    ckpt = Checkpointer(workdir / "checkpoints", save_every=cfg.checkpoint_every)
    if ckpt.latest_step() is not None:
        state = ckpt.restore(state, data_iter)
        logging.info("[sft] resumed from step %d", int(state.step))
    frozen = partitioner.shard_params(frozen)
    step_fn = make_sft_step(graphdef, tx, partitioner, state_shardings,
                            partitioner.param_shardings(frozen))
    writer = MetricWriter(workdir, "sft")
    start, tokens = time.perf_counter(), 0
    while (step := int(state.step)) < cfg.steps:
        state, metrics = step_fn(state, frozen, device_batch(next(data_iter), partitioner))
        tokens += int(metrics["target_tokens"])
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            elapsed = time.perf_counter() - start
            writer.write(step + 1, {"loss": metrics["loss"], "grad_norm": metrics["grad_norm"],
                                    "tokens_per_s": tokens / elapsed})
            start, tokens = time.perf_counter(), 0
        ckpt.save(step + 1, state, data_iter, force=step + 1 == cfg.steps)
    ckpt.wait()
    ckpt.close()
    writer.close()
    return state.params
