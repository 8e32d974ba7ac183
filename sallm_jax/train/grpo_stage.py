"""The GRPO stage: `GRPOStep`s in the shared `TrainingLoop`, a generation of
`grpo.steps_per_generation` batches at a time."""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from flax import nnx

from sallm_jax.data.chat_format import ChatFormat
from sallm_jax.data.manifest import ManifestRow
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.rl.advantages import batch_advantages
from sallm_jax.rl.diagnostics import LogpDiffWatch
from sallm_jax.rl.grpo_settings import GRPOSettings
from sallm_jax.rl.reference import REFERENCE_KEY
from sallm_jax.rl.rewards import RewardWatch
from sallm_jax.rl.scoring import ScoredGroups, completions_table, gathered_failures, rollout_scalars
from sallm_jax.train.dynamic_sampling import drawn_failures, drawn_scalars
from sallm_jax.train.generation import load_generation, prune_generations, save_generation
from sallm_jax.train.grpo_step import GRPOStep
from sallm_jax.train.grpo_update import grpo_extras
from sallm_jax.train.loop import StageSteps, StepResult, TrainingLoop
from sallm_jax.train.metric_writer import MetricWriter
from sallm_jax.train.state import TrainState, make_optimizer


def logged_completions(groups: ScoredGroups, settings: GRPOSettings,
                       partitioner: Partitioner) -> list[dict]:
    """This process's groups as `completions_table` records, with the update's advantages."""
    s = settings
    shape = (-1, s.group_size)
    per_fn = partitioner.gather(groups.per_fn)
    lengths = partitioner.gather(groups.loss_mask(s.mask_truncated_completions).sum(-1))
    advantages = batch_advantages(s.advantages, partitioner.gather(groups.rewards).reshape(shape),
                                  per_fn.reshape(*shape, per_fn.shape[1]), lengths.reshape(shape))
    n = len(groups.texts)
    mine = np.asarray(advantages).reshape(-1)[jax.process_index() * n:][:n]
    return completions_table(groups, mine, list(s.rewards.reward_fns), s.group_size)


class GRPOSteps(StageSteps):
    """GRPO's `StageSteps`: a generation every `cfg.steps_per_generation` steps, one batch per step;
    the watches, the completions table, and checkpoints that keep a generation's samples."""

    def __init__(self, loop: TrainingLoop, grpo_step: GRPOStep, cfg: ml_collections.ConfigDict,
                 *, workdir: pathlib.Path, seed: int, partitioner: Partitioner):
        self.loop, self.grpo_step, self.cfg, self.partitioner = loop, grpo_step, cfg, partitioner
        self.settings = grpo_step.settings
        self.logp_watch = LogpDiffWatch(cfg.warn_logp_diff_above)
        self.reward_watch = RewardWatch(cfg.reward_failure_stop_fraction,
                                        cfg.reward_failure_stop_steps)
        self.generations, self.base_rng = workdir / "generations", jax.random.key(seed)
        self.generation, self.saved, self.groups, self.host = [], None, None, None
        k = cfg.steps_per_generation
        if loop.resumed and (done := loop.step) % k:
            self.saved = load_generation(self.generations, done - done % k, jax.process_index())
            self.generation = grpo_step.restored(self.saved)

    def step(self, state: TrainState, step: int) -> tuple[TrainState, StepResult]:
        k = self.cfg.steps_per_generation
        if step % k == 0:
            keys = [jax.random.fold_in(self.base_rng, step + j) for j in range(k)]
            if self.cfg.dynamic_sampling:
                self.generation = self.grpo_step.generate_filled(
                    state, lambda: next(self.loop.data_iter), keys)
            else:
                self.generation = self.grpo_step.generate(
                    state, [next(self.loop.data_iter) for _ in range(k)], keys)
            self.saved = None
        b = self.generation[step % k]
        state, metrics = self.grpo_step.train(state, b)
        self.groups, self.host = b.groups, b.host
        return state, StepResult(metrics, {"reward": float(b.groups.rewards.mean())},
                                 functools.partial(self.scalars, metrics, b.groups, b.host))

    def scalars(self, metrics: dict[str, jax.Array], groups: ScoredGroups,
                host: dict[str, np.ndarray], seconds: float) -> dict[str, float]:
        update = {k: v for k, v in jax.device_get(metrics).items() if k != "finite"}
        s = self.settings
        scalars = {**update, **rollout_scalars(groups, s.group_size, s.rewards.reward_fns,
                                               self.partitioner), "step_seconds": seconds}
        if self.cfg.dynamic_sampling:
            scalars.update(drawn_scalars(host))
        scalars["tokens_per_s"] = scalars.pop("completion_tokens") / seconds
        return scalars

    def check(self, step: int, result: StepResult) -> None:
        self.logp_watch.after_step(step, result.metrics)
        failures = (drawn_failures(self.host, list(self.settings.rewards.reward_fns))
                    if self.cfg.dynamic_sampling
                    else gathered_failures(self.groups, self.partitioner))
        self.reward_watch.after_step(step, *failures, self.groups.first_errors)

    def record(self, step: int, writer: MetricWriter) -> None:
        every = self.cfg.log_completions_every
        if every and step % every == 0:
            writer.write_completions(step, logged_completions(self.groups, self.settings,
                                                              self.partitioner))

    def save(self, step: int, *, force: bool = False, now: bool = False) -> None:
        """The loop's checkpoint, preceded inside a generation by its samples (once per generation);
        generations no kept checkpoint lies in are pruned."""
        k, ckpt = self.cfg.steps_per_generation, self.loop.ckpt
        inside = step % k
        if inside and self.saved is None and (now or ckpt.will_save(step, force=force)):
            self.saved = self.grpo_step.saved(self.generation, step - inside)
            save_generation(self.generations, self.saved, jax.process_index())
        if self.loop.save(step, force=force, now=now) and not now and (
                kept := ckpt.kept_steps()):
            prune_generations(self.generations, min(kept) - min(kept) % k)


def check_reference(ref_params: nnx.State | None, params: nnx.State, frozen: nnx.State,
                    beta: float, moving: bool = False) -> None:
    """Raises ValueError when `ref_params` is None (the policy with its LoRA adapters off) for a
    KL term (beta != 0) on a model without adapters and without a moving reference (`moving`,
    grpo.sync_ref_model, which starts from `params`): its reference would be the policy."""
    if ref_params is None and beta != 0.0 and not moving and not any(
            "lora_a" in path for state in (params, frozen)
            for path, _ in nnx.to_flat_state(state)):
        raise ValueError("run_grpo: ref_params=None takes the policy with its LoRA adapters off "
                         "as the reference, and this model has no adapters: the KL term would "
                         "be 0 at every step; pass the reference parameters")


def run_grpo(cfg: ml_collections.ConfigDict, *, graphdef: nnx.GraphDef, params: nnx.State,
             frozen: nnx.State, ref_params: nnx.State | None, rows: Sequence[ManifestRow],
             chat: ChatFormat, workdir: pathlib.Path, seed: int, partitioner: Partitioner,
             **loop_args) -> nnx.State:
    """Run `cfg.steps` GRPO steps (`cfg`: the `grpo` section), resuming from the stage's latest
    checkpoint; the final (or best) parameters. The reference (beta > 0) is `ref_params` with LoRA
    adapters off (None: the policy's own, the base model when only adapters train); `params` stay
    untouched, so they can serve as `ref_params`; `cfg.sync_ref_model` moves it toward the policy.
    Batch j of the generation starting at step s uses step s + j's key; its first step's
    `step_seconds` holds the generation's rollouts. `loop_args` go to `TrainingLoop`. ConfigError
    names a bad key of the section."""
    settings = GRPOSettings.from_section(cfg)
    check_reference(ref_params, params, frozen, settings.loss.beta, cfg.sync_ref_model)
    tx = make_optimizer(learning_rate=cfg.learning_rate, warmup_steps=cfg.warmup_steps,
                        total_steps=cfg.steps * cfg.num_iterations,
                        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm)
    # grpo.sync_ref_model: the reference starts as `ref_params` (the policy's start when None)
    # and moves with the train state, checkpointed with it.
    moving_reference = ({REFERENCE_KEY: params if ref_params is None else ref_params}
                        if cfg.sync_ref_model and settings.loss.beta != 0.0 else {})
    loop = TrainingLoop("grpo", cfg, params=params, tx=tx, rows=rows, chat=chat,
                        extras={**grpo_extras(settings), **moving_reference},
                        workdir=workdir, seed=seed, partitioner=partitioner,
                        updates_per_step=cfg.num_iterations, counter="update",
                        batches_per_step=(cfg.dynamic_sampling_max_draws
                                          if cfg.dynamic_sampling else 1), **loop_args)
    grpo_step = GRPOStep(cfg, settings=settings, graphdef=graphdef, tx=tx,
                         state_shardings=loop.state_shardings,
                         frozen=frozen, ref_params=ref_params, rows=rows, chat=chat,
                         partitioner=partitioner)
    steps = GRPOSteps(loop, grpo_step, cfg, workdir=workdir, seed=seed, partitioner=partitioner)
    return loop.run(steps, save=steps.save)
