"""Supervised fine-tuning: cross-entropy on the answer tokens only (prompt and audio excluded)."""

from __future__ import annotations

import functools
import logging
import pathlib
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from sallm_jax.audio.log_mel import num_feature_frames
from sallm_jax.data.bad_input import SkipLog
from sallm_jax.data.manifest import ManifestRow
from sallm_jax.data.pipeline import BatchSpec, training_dataset
from sallm_jax.models.qwen2_audio.config import audio_token_count
from sallm_jax.models.qwen2_audio.model import SpeechLM
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.progress import StageProgress
from sallm_jax.rl.policy import completion_logprobs, merge_policy
from sallm_jax.train.best import BestKeeper
from sallm_jax.train.checkpoint import Checkpointer
from sallm_jax.train.health import HealthCheck
from sallm_jax.train.metric_writer import MetricWriter
from sallm_jax.train.preemption import stop_here
from sallm_jax.train.state import (
    TrainState,
    apply_gradients,
    make_optimizer,
    sharded_train_state,
)


def transcript_ctc_loss(model: SpeechLM, batch: dict[str, jax.Array],
                        audio_embeds: jax.Array, blank_id: int) -> jax.Array:
    """CTC of the audio embeddings, read through the LM head, against the target tokens (the end
    token left out), per target token.

    The hybrid CTC / attention objective of end-to-end ASR: the alignment-free CTC term teaches
    the encoder and projector which token each stretch of audio holds, which the decoder's
    attention alone learns slowly. `blank_id` is a token no target holds (the pad token).

    Args:
      batch: "num_samples" [B], "target_ids" / "target_mask" [B, T] (each row ends with the
        end token), "valid" [B].
      audio_embeds: [B, N, hidden] from `model.encode_batch_audio(batch)`.
    """
    logits = model.language_model.logits(audio_embeds)
    frames = audio_token_count(num_feature_frames(batch["num_samples"]))
    logit_paddings = (jnp.arange(logits.shape[1])[None] >= frames[:, None]).astype(jnp.float32)
    target_mask = batch["target_mask"]
    # Drop each row's last real token, the end token, which no stretch of audio says.
    later = jnp.flip(jnp.cumsum(jnp.flip(target_mask, 1), 1), 1)
    labels_mask = target_mask * (later > 1) * batch["valid"][:, None]
    per_clip = optax.ctc_loss(logits, logit_paddings, batch["target_ids"],
                              1.0 - labels_mask.astype(jnp.float32), blank_id=blank_id)
    return (per_clip * batch["valid"]).sum() / jnp.maximum(labels_mask.sum(), 1)


def sft_loss(params: nnx.State, frozen: nnx.State, graphdef: nnx.GraphDef,
             batch: dict[str, jax.Array], ctc_weight: float = 0.0,
             blank_id: int = 0) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean token cross-entropy of the targets given prompt and audio, plus `ctc_weight` times
    `transcript_ctc_loss` when it is > 0 (transcription targets only)."""
    model = merge_policy(graphdef, params, frozen)
    audio_embeds = model.encode_batch_audio(batch)
    logp = completion_logprobs(model, batch, batch["target_ids"], batch["target_mask"],
                               audio_embeds=audio_embeds)
    mask = batch["target_mask"] * batch["valid"][:, None]
    tokens = jnp.maximum(mask.sum(), 1)
    loss = -(logp * mask).sum() / tokens
    metrics = {"loss": loss, "target_tokens": mask.sum()}
    if ctc_weight > 0:
        metrics["ctc_loss"] = transcript_ctc_loss(model, batch, audio_embeds, blank_id)
        loss = loss + ctc_weight * metrics["ctc_loss"]
    return loss, metrics


def make_sft_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                  partitioner: Partitioner, state_shardings: TrainState,
                  frozen_shardings: nnx.State, ctc_weight: float = 0.0, blank_id: int = 0):
    """jit(step(state, frozen, batch) -> (state, metrics)); the state's buffers are donated."""

    def step(state: TrainState, frozen: nnx.State, batch: dict[str, jax.Array]):
        grad_fn = jax.value_and_grad(sft_loss, has_aux=True)
        (loss, metrics), grads = grad_fn(state.params, frozen, graphdef, batch, ctc_weight,
                                         blank_id)
        metrics["grad_norm"] = optax.global_norm(grads)
        state, metrics["finite"] = apply_gradients(state, grads, tx, loss)
        return state, metrics

    return jax.jit(step, in_shardings=(state_shardings, frozen_shardings, partitioner.batch),
                   out_shardings=(state_shardings, partitioner.replicated), donate_argnums=0)


def run_sft(cfg: ml_collections.ConfigDict, *, graphdef: nnx.GraphDef, params: nnx.State,
            frozen: nnx.State,
            rows: Sequence[ManifestRow], tokenizer, spec: BatchSpec, workdir: pathlib.Path,
            seed: int, partitioner: Partitioner, skip_log: SkipLog | None = None,
            validate: Callable[[nnx.State], float] | None = None,
            num_workers: int = 0, name: str = "sft",
            health: HealthCheck | None = None) -> nnx.State:
    """Train for `cfg.steps` steps, resuming from the stage's latest checkpoint; returns params.

    `params` are what trains (all parameters, or the LoRA adapters and what the config adds),
    `frozen` the rest of the model state. `spec.batch_size` is this process's share of the
    batch. `params` stay untouched (the train state starts from a copy), so another stage can
    start from them too.

    With `validate` (params -> score, higher is better) and `cfg.eval_every` > 0, the starting
    parameters and those every `eval_every` steps are scored and the best are returned, as the
    GRPO stage does. `name` labels the log lines and metrics (the base and warm-up stages are
    supervised too). `health` watches every step (default: stop on a non-finite one).
    """
    health = health or HealthCheck(stage=name)
    tx = make_optimizer(learning_rate=cfg.learning_rate, warmup_steps=cfg.warmup_steps,
                        total_steps=cfg.steps, weight_decay=cfg.weight_decay,
                        max_grad_norm=cfg.max_grad_norm)
    state, state_shardings = sharded_train_state(partitioner, params, tx, copy=True)
    data_iter = iter(training_dataset(rows, tokenizer, spec, num_batches=cfg.steps, seed=seed,
                                      process_index=jax.process_index(),
                                      process_count=jax.process_count(), skip_log=skip_log,
                                      num_workers=num_workers))
    ckpt = Checkpointer(workdir / "checkpoints", save_every=cfg.checkpoint_every)
    if ckpt.latest_step() is not None:
        state = ckpt.restore(state, data_iter)
        logging.info("[%s] resumed from step %d", name, int(state.step))
    frozen = partitioner.shard_params(frozen)
    step_fn = make_sft_step(graphdef, tx, partitioner, state_shardings,
                            partitioner.param_shardings(frozen),
                            ctc_weight=cfg.ctc_weight,
                            blank_id=tokenizer.pad_token_id)
    writer = MetricWriter(workdir, name, resume_step=int(state.step))
    keeper = (BestKeeper(workdir / "best", validate, partitioner, cfg.eval_every)
              if validate is not None and cfg.eval_every else None)
    if keeper:
        keeper.start(state.params)
    start, tokens = time.perf_counter(), 0
    progress = StageProgress(name, cfg.steps, int(state.step))
    while (step := int(state.step)) < cfg.steps:
        state, metrics = step_fn(state, frozen, partitioner.device_batch(next(data_iter)))
        health.after_step(step + 1, metrics)
        tokens += int(metrics["target_tokens"])
        progress.step_done(step + 1, {"loss": metrics["loss"]})
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            elapsed = time.perf_counter() - start
            scalars = {k: metrics[k] for k in ("loss", "ctc_loss", "grad_norm") if k in metrics}
            writer.write(step + 1, {**scalars, "tokens_per_s": tokens / elapsed},
                         progress.describe(step + 1))
            start, tokens = time.perf_counter(), 0
        if keeper and (score := keeper.after_step(step + 1, cfg.steps, state.params)) is not None:
            writer.write(step + 1, {"validation_score": score})
        ckpt.save(step + 1, state, data_iter, force=step + 1 == cfg.steps)
        stop_here(name, step + 1, functools.partial(ckpt.save_now, step + 1, state, data_iter))
    progress.close()
    ckpt.wait()
    ckpt.close()
    writer.close()
    return keeper.best(state.params) if keeper else state.params
