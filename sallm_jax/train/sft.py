"""Supervised fine-tuning: cross-entropy on the answer tokens only (prompt and audio excluded)."""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from sallm_jax.data.chat_format import ChatFormat
from sallm_jax.models.families import family_for_model
from sallm_jax.models.layer_scan import compiler_options
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.rl.policy import completion_logprobs, merge_policy
from sallm_jax.train.loop import StageSteps, StepResult, TrainingLoop
from sallm_jax.train.state import TrainState, apply_gradients, make_optimizer


def transcript_ctc_loss(model: nnx.Module, batch: dict[str, jax.Array],
                        audio_embeds: jax.Array, blank_id: int) -> jax.Array:
    """CTC of the audio embeddings through the LM head against the target tokens (end token left
    out), per target token: the hybrid CTC / attention objective of end-to-end ASR. `batch`:
    "num_samples" [B], "target_ids" / "target_mask" [B, T], "valid" [B]; `audio_embeds`: [B, N,
    hidden] (`model.encode_batch_audio`), clip b's frames as many as its placeholders; `blank_id`: a
    token no target holds (the pad token)."""
    logits = model.language_model.logits(audio_embeds)
    family = family_for_model(model)
    frames = family.audio_tokens(model.config, family.feature_frames(batch["num_samples"]))
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
    """Mean token cross-entropy of the targets, plus `ctc_weight` x `transcript_ctc_loss` if > 0."""
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
        metrics["grad_norm"] = optax.tree.norm(grads)
        state, metrics["finite"] = apply_gradients(state, grads, tx, loss)
        return state, metrics

    return jax.jit(step, in_shardings=(state_shardings, frozen_shardings, partitioner.batch),
                   out_shardings=(state_shardings, partitioner.replicated), donate_argnums=0,
                   compiler_options=compiler_options())


class SupervisedSteps(StageSteps):
    """One supervised update per step; tokens/s covers the steps since the last record."""

    def __init__(self, loop: TrainingLoop, cfg: ml_collections.ConfigDict, *,
                 graphdef: nnx.GraphDef, tx: optax.GradientTransformation, frozen: nnx.State,
                 partitioner: Partitioner, blank_id: int):
        self.loop, self.partitioner = loop, partitioner
        self.frozen = partitioner.shard_params(frozen)
        self.step_fn = make_sft_step(graphdef, tx, partitioner, loop.state_shardings,
                                     partitioner.param_shardings(self.frozen),
                                     ctc_weight=cfg.ctc_weight, blank_id=blank_id)
        self.since, self.tokens = None, 0  # the record's timer starts with the first step

    def step(self, state: TrainState, step: int) -> tuple[TrainState, StepResult]:
        self.since = self.since or time.perf_counter()
        batch = self.partitioner.device_batch(next(self.loop.data_iter))
        state, metrics = self.step_fn(state, self.frozen, batch)
        self.tokens += int(metrics["target_tokens"])
        return state, StepResult(metrics, {"loss": metrics["loss"]},
                                 functools.partial(self.scalars, metrics))

    def scalars(self, metrics: dict[str, jax.Array], seconds: float) -> dict[str, float]:
        elapsed = time.perf_counter() - self.since
        scalars = {k: metrics[k] for k in ("loss", "ctc_loss", "grad_norm") if k in metrics}
        scalars["tokens_per_s"] = self.tokens / elapsed
        self.since, self.tokens = time.perf_counter(), 0
        return scalars


def run_sft(cfg: ml_collections.ConfigDict, *, graphdef: nnx.GraphDef, params: nnx.State,
            frozen: nnx.State, chat: ChatFormat, name: str = "sft", **loop_args) -> nnx.State:
    """Train `cfg.steps` steps, resuming from the stage's latest checkpoint; the final (or best)
    params. `params` (what trains) and `frozen` (the rest) stay untouched; `name` labels logs and
    metrics; `loop_args` go to `TrainingLoop`."""
    tx = make_optimizer(learning_rate=cfg.learning_rate, warmup_steps=cfg.warmup_steps,
                        total_steps=cfg.steps, weight_decay=cfg.weight_decay,
                        max_grad_norm=cfg.max_grad_norm)
    loop = TrainingLoop(name, cfg, params=params, tx=tx, chat=chat, **loop_args)
    return loop.run(SupervisedSteps(loop, cfg, graphdef=graphdef, tx=tx, frozen=frozen,
                                    partitioner=loop_args["partitioner"],
                                    blank_id=chat.pad_id))
