"""One GRPO step: rollout -> rewards (host) -> group advantages -> clipped-ratio update; the
compiled update is `train/grpo_update.py`, the stage around it `train/grpo_stage.py`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import ml_collections
import numpy as np
import optax
from flax import nnx

from sallm_jax.data.chat_format import ChatFormat
from sallm_jax.data.manifest import ManifestRow
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.rl.diagnostics import logp_difference
from sallm_jax.rl.grpo_settings import GRPOSettings
from sallm_jax.rl.reference import REFERENCE_KEY, mixed_reference, sync_due
from sallm_jax.rl.rollout import Rollout, SamplingConfig, make_rollout_fn
from sallm_jax.rl.scoring import ScoredGroups, local_rollout, score_groups
from sallm_jax.train.dynamic_sampling import fill_batch
from sallm_jax.train.generation import SavedGeneration
from sallm_jax.train.grpo_update import make_grpo_update, make_logprob_fn
from sallm_jax.train.state import TrainState


@dataclasses.dataclass
class GenerationBatch:
    """One batch of a generation, scored and on the device, ready for its updates."""

    host: dict[str, np.ndarray]  # this process's host batch
    local: Rollout  # this process's rows of its rollout (NumPy)
    groups: ScoredGroups
    batch: dict[str, jax.Array]
    group: dict[str, jax.Array]
    old_logp: jax.Array | None  # at the sampler's parameters; None: the first update is the only


class GRPOStep:
    """GRPO on host batches: `generate` rolls out (G completions per prompt, [B * G, C]) and scores
    (rewards [B, G], on the host) a generation of batches at the same parameters; `train` runs a
    batch's `num_iterations` updates; a call does both for one batch. `settings`: the `grpo` section
    `cfg`, typed. The reference is `ref_params` (None: the policy's own) with LoRA adapters off, or
    with `cfg.sync_ref_model` the state's `extras[REFERENCE_KEY]`. `rows`: the examples a batch's
    "index" refers to. A batch without "waveforms" holds text-only prompts."""

    def __init__(self, cfg: ml_collections.ConfigDict, *, settings: GRPOSettings,
                 graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                 state_shardings: TrainState, frozen: nnx.State, ref_params: nnx.State | None,
                 rows: Sequence[ManifestRow], chat: ChatFormat, partitioner: Partitioner):
        self.cfg, self.settings, self.rows, self.chat = cfg, settings, rows, chat
        self.partitioner = partitioner
        self.frozen = partitioner.shard_params(frozen)
        frozen_shardings = partitioner.param_shardings(self.frozen)
        beta = settings.loss.beta
        # A moving reference (grpo.sync_ref_model) lives in the train state, not here.
        self.moving_reference = cfg.sync_ref_model and beta != 0.0
        self.ref_params = (partitioner.shard_params(ref_params) if ref_params is not None
                           and beta != 0.0 and not self.moving_reference else None)
        self.sync_reference = jax.jit(
            lambda state: state._replace(extras={**state.extras, REFERENCE_KEY: mixed_reference(
                state.extras[REFERENCE_KEY], state.params, cfg.ref_model_mixup_alpha)}),
            in_shardings=(state_shardings,), out_shardings=state_shardings, donate_argnums=0)
        sampling = SamplingConfig(max_new_tokens=cfg.max_completion_length,
                                  temperature=settings.temperature, top_k=cfg.top_k,
                                  top_p=cfg.top_p, min_p=cfg.min_p,
                                  repetition_penalty=cfg.repetition_penalty)
        self.sample = make_rollout_fn(graphdef, state_shardings.params, frozen_shardings,
                                      partitioner, sampling=sampling,
                                      group_size=settings.group_size - settings.num_off_policy,
                                      eos_ids=chat.stop_ids, pad_id=chat.pad_id,
                                      compute_dtype=settings.loss.rollout_dtype)
        self.logprobs, self.ref_logprobs = (
            make_logprob_fn(graphdef, state_shardings.params, frozen_shardings, partitioner,
                            group_size=settings.group_size, temperature=settings.temperature,
                            adapters=adapters, micro_batch_size=settings.micro_batch_size)
            for adapters in (True, False))
        self.update = make_grpo_update(graphdef, tx, settings, partitioner, state_shardings,
                                       frozen_shardings)

    def score(self, local: Rollout, host: dict[str, np.ndarray]) -> ScoredGroups:
        """This process's rows of a rollout of `host`, with the ground-truth rows, scored."""
        s = self.settings
        return score_groups(local, host, self.rows, self.chat.tokenizer, s.rewards,
                            group_size=s.group_size, num_off_policy=s.num_off_policy)

    def _scored(self, host: dict[str, np.ndarray], local: Rollout,
                batch: dict[str, jax.Array] | None = None) -> GenerationBatch:
        s, groups = self.settings, self.score(local, host)
        batch = self.partitioner.device_batch(host) if batch is None else batch
        group = groups.device_group(s.group_size, mask_truncated=s.mask_truncated_completions,
                                    per_reward=s.advantages.per_reward,
                                    partitioner=self.partitioner)
        return GenerationBatch(host, local, groups, batch, group, None)

    def _rollout(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array) -> Rollout:
        return local_rollout(self.sample(state.params, self.frozen, batch, rng), self.partitioner)

    def generate(self, state: TrainState, hosts: Sequence[dict[str, np.ndarray]],
                 rngs: Sequence[jax.Array]) -> list[GenerationBatch]:
        """Roll out and score each batch at `state`'s parameters; old log-probs for the batches
        updated after the parameters moved (all if num_iterations > 1, else all but the first)."""
        batches = [self.partitioner.device_batch(host) for host in hosts]
        local = [self._rollout(state, batch, rng) for batch, rng in zip(batches, rngs, strict=True)]
        return self._with_old_logp(state, [self._scored(*b) for b in zip(hosts, local, batches,
                                                                         strict=True)])

    def generate_filled(self, state: TrainState, draw: Callable[[], dict[str, np.ndarray]],
                        rngs: Sequence[jax.Array]) -> list[GenerationBatch]:
        """`generate` with each batch filled by dynamic sampling (`fill_batch`) from `draw`."""
        def rollout(host, rng):
            return self._rollout(state, self.partitioner.device_batch(host), rng)

        s = self.settings
        return self._with_old_logp(state, [
            self._scored(*fill_batch(draw, rollout, self.score, rng,
                                     max_draws=self.cfg.dynamic_sampling_max_draws,
                                     group_size=s.group_size, per_reward=s.advantages.per_reward,
                                     reward_names=s.rewards.reward_fns,
                                     partitioner=self.partitioner, pad_id=self.chat.pad_id))
            for rng in rngs])

    def _with_old_logp(self, state: TrainState,
                       generation: list[GenerationBatch]) -> list[GenerationBatch]:
        """`generation` with the old log-probs of the batches that need them (see `generate`)."""
        for j, b in enumerate(generation):
            if j > 0 or self.cfg.num_iterations > 1:
                b.old_logp = self.logprobs(state.params, self.frozen, b.batch, b.group["ids"],
                                           b.group["mask"])
        return generation

    def saved(self, generation: Sequence[GenerationBatch], first_step: int) -> SavedGeneration:
        """This process's part of `generation`, for a checkpoint inside it."""
        return SavedGeneration(first_step, [b.host for b in generation],
                               [b.local for b in generation],
                               [None if b.old_logp is None else self.partitioner.to_local(
                                   b.old_logp) for b in generation])

    def restored(self, saved: SavedGeneration) -> list[GenerationBatch]:
        """The generation `saved` holds, scored again from its completions."""
        generation = [self._scored(h, out) for h, out in zip(saved.batches, saved.rollouts,
                                                             strict=True)]
        for b, old in zip(generation, saved.old_logp, strict=True):
            if old is not None:
                b.old_logp = self.partitioner.to_global({"old_logp": old})["old_logp"]
        return generation

    def train(self, state: TrainState, b: GenerationBatch) -> tuple[TrainState, dict]:
        """`num_iterations` updates on one batch: (new state, the last update's metrics with the
        sampler gap at the sampler's parameters); `state` is donated."""
        cfg, frozen = self.cfg, self.frozen
        # Log-probs of the reference only when the KL term is on: no forward pass otherwise.
        ref = state.params if self.ref_params is None else self.ref_params
        if self.moving_reference:
            ref = state.extras[REFERENCE_KEY]
        ref_logp = (self.ref_logprobs(ref, frozen, b.batch, b.group["ids"], b.group["mask"])
                    if self.settings.loss.beta != 0.0 else None)
        finite, gap = True, {}
        for i in range(cfg.num_iterations):
            state, metrics = self.update(state, frozen, b.batch, b.group, b.old_logp, ref_logp)
            finite = finite & metrics["finite"]
            if self.moving_reference and sync_due(int(state.step), cfg.ref_model_sync_steps):
                state = self.sync_reference(state)
            if i == 0:
                gap = {k: v for k, v in metrics.items() if k.startswith("logp_diff/")}
        if gap and b.old_logp is not None:
            # The parameters may have moved since the rollout: compare the sampler with the
            # old log-probs, which the trainer took at the sampler's parameters.
            on_policy = b.group["mask"] * ~b.group["off_policy"][:, None]
            gap = logp_difference(b.group["rollout_logp"], b.old_logp, on_policy)
        return state, {**metrics, **gap, "finite": finite}

    def __call__(self, state: TrainState, host_batch: dict[str, np.ndarray],
                 rng: jax.Array) -> tuple[TrainState, dict[str, jax.Array], ScoredGroups]:
        """(new state, the last update's metrics, the scored rollout); `state` is donated."""
        (b,) = self.generate(state, [host_batch], [rng])
        return (*self.train(state, b), b.groups)
