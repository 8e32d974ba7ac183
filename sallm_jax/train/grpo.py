"""The GRPO stage: rollout -> rewards (host) -> group advantages -> clipped-ratio update.

One step, as data: B prompts with audio -> `rollout` samples G completions each ([B * G, C], the
prefill done once per prompt) -> decoded and scored on the host -> rewards [B, G] back to the
device -> advantages, reference log-probs (when beta > 0) and old log-probs (when
num_iterations > 1) -> `grpo_loss` -> AdamW update with the state's buffers donated.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import pathlib
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from sallm_jax.data.bad_input import SkipLog
from sallm_jax.data.manifest import ManifestRow
from sallm_jax.data.pipeline import BatchSpec, training_dataset
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.rl.diagnostics import (
    LogpDiffWatch,
    completion_length_range,
    logp_difference,
    masked_mean,
)
from sallm_jax.rl.grpo import group_advantages, grpo_loss, per_reward_advantages
from sallm_jax.rl.mixed_policy import join_groups, mix_in_references
from sallm_jax.rl.policy import completion_logprobs, completion_logprobs_and_entropy, merge_policy
from sallm_jax.rl.rewards import RewardWatch, compute_rewards, get_reward_fns
from sallm_jax.rl.rollout import SamplingConfig, rollout
from sallm_jax.train.best import BestKeeper
from sallm_jax.train.checkpoint import Checkpointer
from sallm_jax.train.health import HealthCheck
from sallm_jax.train.metric_writer import MetricWriter
from sallm_jax.train.microbatch import accumulate, join_prompts, split_prompts
from sallm_jax.train.preemption import stop_here
from sallm_jax.train.progress import StageProgress
from sallm_jax.train.sft import device_batch
from sallm_jax.train.state import TrainState, apply_gradients, make_optimizer


def make_rollout_fn(graphdef: nnx.GraphDef, param_shardings: nnx.State,
                    frozen_shardings: nnx.State, partitioner: Partitioner, *,
                    sampling: SamplingConfig, group_size: int, eos_ids: tuple[int, ...],
                    pad_id: int):
    """jit(fn(params, frozen, batch, rng) -> Rollout), completions split along the batch axis."""

    def fn(params, frozen, batch, rng):
        return rollout(merge_policy(graphdef, params, frozen), batch, rng, sampling=sampling,
                       group_size=group_size, eos_ids=eos_ids, pad_id=pad_id)

    return jax.jit(fn, in_shardings=(param_shardings, frozen_shardings, partitioner.batch,
                                     partitioner.replicated), out_shardings=partitioner.batch)


def make_logprob_fn(graphdef: nnx.GraphDef, param_shardings: nnx.State,
                    frozen_shardings: nnx.State, partitioner: Partitioner, *, group_size: int,
                    temperature: float, adapters: bool = True, micro_batch_size: int = 0):
    """jit(fn(params, frozen, batch, ids, mask) -> [B * G, C] log-probs), for the old policy
    and (adapters=False under LoRA) the reference; `micro_batch_size` prompts at a time."""

    def one(params, frozen, batch, ids, mask):
        model = merge_policy(graphdef, params, frozen, adapters=adapters)
        return completion_logprobs(model, batch, ids, mask, group_size=group_size,
                                   temperature=temperature)

    def fn(params, frozen, batch, ids, mask):
        num_prompts = batch["prompt_ids"].shape[0]
        if not micro_batch_size or micro_batch_size >= num_prompts:
            return one(params, frozen, batch, ids, mask)
        k = num_prompts // micro_batch_size
        chunks = (split_prompts(batch, k), *split_prompts((ids, mask), k, group_size))
        logp = jax.lax.map(lambda c: one(params, frozen, *c), chunks)
        return join_prompts(logp, group_size)

    batch = partitioner.batch
    return jax.jit(fn, in_shardings=(param_shardings, frozen_shardings, batch, batch, batch),
                   out_shardings=batch)


def make_grpo_update(graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                     cfg: ml_collections.ConfigDict, partitioner: Partitioner,
                     state_shardings: TrainState, frozen_shardings: nnx.State):
    """jit(update(state, frozen, batch, group, old_logp, ref_logp) -> (state, metrics)).

    `group` holds "ids", "mask" [B * G, C], "rewards" [B, G], "off_policy" [B * G], with
    `multi_reward_normalization="per_reward"` "per_fn" [B, G, F] (NaN: not applicable), and
    optionally "rollout_logp" [B * G, C] (the sampler's log-probs of the tokens; then the
    metrics hold their gap to this update's log-probs, "logp_diff/mean" and "/max");
    `old_logp` / `ref_logp` may be None (one update per rollout / beta == 0). With
    `cfg.micro_batch_size` > 0 the loss and gradients are accumulated over micro-batches of
    that many prompts (same result, less activation memory; a `top_entropy_quantile`
    threshold is then taken within each micro-batch). "entropy" is the policy's mean entropy
    over the sampled completion tokens, from the same log-softmax as the log-probs.
    """

    def loss_fn(params, frozen, rows):
        logp, entropy = completion_logprobs_and_entropy(
            merge_policy(graphdef, params, frozen), rows["batch"], rows["ids"], rows["mask"],
            group_size=cfg.group_size, temperature=cfg.temperature)
        old = jax.lax.stop_gradient(logp) if rows["old_logp"] is None else rows["old_logp"]
        loss, metrics = grpo_loss(
            logp, old, rows["ref_logp"], rows["advantages"], rows["mask"].astype(jnp.float32),
            epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high, beta=cfg.beta,
            aggregation=cfg.loss_aggregation,
            importance_sampling_level=cfg.importance_sampling_level,
            off_policy=rows["off_policy"] if cfg.num_off_policy else None,
            loss_type=cfg.loss_type, delta=cfg.delta or None, sapo_tau_pos=cfg.sapo_tau_pos,
            sapo_tau_neg=cfg.sapo_tau_neg, entropy=entropy,
            top_entropy_quantile=cfg.top_entropy_quantile, entropy_coef=cfg.entropy_coef)
        return loss, (metrics, jax.lax.stop_gradient({"logp": logp, "entropy": entropy}))

    def advantages(group):
        if cfg.multi_reward_normalization == "per_reward":
            weights = jnp.asarray(cfg.reward_weights, jnp.float32)
            return per_reward_advantages(group["per_fn"], weights, cfg.scale_rewards)
        return group_advantages(group["rewards"], cfg.scale_rewards)

    def update(state: TrainState, frozen, batch, group, old_logp, ref_logp):
        rows = {"batch": batch, "ids": group["ids"], "mask": group["mask"],
                "off_policy": group["off_policy"], "old_logp": old_logp, "ref_logp": ref_logp,
                "advantages": advantages(group).reshape(-1)}
        grad_fn = jax.value_and_grad(lambda p, r: loss_fn(p, frozen, r), has_aux=True)
        num_prompts = group["rewards"].shape[0]
        if not cfg.micro_batch_size or cfg.micro_batch_size >= num_prompts:
            (loss, (metrics, per_token)), grads = grad_fn(state.params, rows)
        else:
            k = num_prompts // cfg.micro_batch_size
            chunks = {**split_prompts({n: v for n, v in rows.items() if n != "batch"}, k,
                                      cfg.group_size), "batch": split_prompts(batch, k)}
            # Each micro-batch's share of the loss's normaliser (see AGGREGATIONS).
            if cfg.loss_aggregation in ("dapo", "bnpo"):
                weights = chunks["mask"].sum((1, 2)) / jnp.maximum(group["mask"].sum(), 1)
            else:
                weights = jnp.full((k,), 1.0 / k)
            (loss, (metrics, per_token)), grads = accumulate(grad_fn, state.params, chunks,
                                                             weights, per_chunk=True)
            per_token = jax.tree.map(lambda x: join_prompts(x, cfg.group_size), per_token)
        sampled = group["mask"] * ~group["off_policy"][:, None]
        metrics = {**metrics, "entropy": masked_mean(per_token["entropy"], sampled)}
        if group.get("rollout_logp") is not None:
            metrics.update(logp_difference(group["rollout_logp"], per_token["logp"], sampled))
        metrics = {**metrics, "loss": loss, "grad_norm": optax.global_norm(grads)}
        state, metrics["finite"] = apply_gradients(state, grads, tx, loss)
        return state, metrics

    batch = partitioner.batch
    return jax.jit(update, in_shardings=(state_shardings, frozen_shardings, batch, batch, batch,
                                         batch),
                   out_shardings=(state_shardings, partitioner.replicated), donate_argnums=0)


def decode_completions(tokenizer, ids: np.ndarray, mask: np.ndarray) -> list[str]:
    """Text of each completion row, special tokens (the end token) removed."""
    return [tokenizer.decode(row[: int(m.sum())], skip_special_tokens=True).strip()
            for row, m in zip(ids, mask, strict=True)]


@dataclasses.dataclass
class ScoredGroups:
    """One rollout batch on the host: B prompts x G completions, prompt-major."""

    ids: np.ndarray  # [B * G, C]
    mask: np.ndarray  # [B * G, C]
    truncated: np.ndarray  # [B * G] bool
    off_policy: np.ndarray  # [B * G] bool, ground-truth rows of mixed-policy GRPO
    texts: list[str]
    examples: list[dict]
    rewards: np.ndarray  # [B * G] weighted sum
    per_fn: np.ndarray  # [B * G, num reward functions], NaN where a reward does not apply
    failures: dict[str, int]
    first_errors: dict[str, BaseException]
    rollout_logp: np.ndarray | None = None  # [B * G, C] the sampler's; 0 on off-policy rows

    def device_group(self, cfg: ml_collections.ConfigDict,
                     partitioner: Partitioner) -> dict[str, jax.Array]:
        """What the update consumes; truncated samples leave the loss when so configured."""
        mask = self.mask * ~self.truncated[:, None] if cfg.mask_truncated_completions else self.mask
        group = {"ids": self.ids, "mask": mask,
                 "rewards": self.rewards.reshape(-1, cfg.group_size),
                 "off_policy": self.off_policy}
        if cfg.multi_reward_normalization == "per_reward":
            group["per_fn"] = self.per_fn.reshape(-1, cfg.group_size, self.per_fn.shape[1])
        if self.rollout_logp is not None:
            group["rollout_logp"] = self.rollout_logp
        return partitioner.to_global(group)


def score_groups(out, host_batch: dict, rows: Sequence[ManifestRow], tokenizer, reward_fns,
                 cfg: ml_collections.ConfigDict, partitioner: Partitioner) -> ScoredGroups:
    """Bring this process's rows of a rollout to the host, add the ground-truth rows
    (mixed-policy GRPO), decode, and score every completion with the configured rewards."""
    ids, mask, truncated = (partitioner.to_local(x) for x in (out.ids, out.mask, out.truncated))
    logp = None if out.logp is None else partitioner.to_local(out.logp)
    off_policy = np.zeros(len(ids), bool)
    if cfg.num_off_policy:
        if logp is not None:
            logp = join_groups(logp, np.zeros((len(host_batch["target_ids"]), logp.shape[1]),
                                              logp.dtype), cfg.num_off_policy)
        ids, mask, truncated, off_policy = mix_in_references(
            ids, mask, truncated, host_batch["target_ids"], host_batch["target_mask"],
            cfg.num_off_policy)
    # A prompt whose example was skipped (bad audio, "skip" policy) leaves the loss.
    mask = mask * np.repeat(host_batch["valid"], cfg.group_size)[:, None]
    texts = decode_completions(tokenizer, ids, mask)
    examples = [dataclasses.asdict(rows[i])
                for i in np.repeat(host_batch["index"], cfg.group_size)]
    rewards, per_fn, failures, first_errors = compute_rewards(
        reward_fns, cfg.reward_weights, texts, examples, failure_value=cfg.reward_failure_value,
        names=list(cfg.reward_fns))
    return ScoredGroups(ids, mask, truncated, off_policy, texts, examples, rewards, per_fn,
                        failures, first_errors, logp)


def gathered_failures(groups: ScoredGroups,
                      partitioner: Partitioner) -> tuple[dict[str, int], int]:
    """(per reward, the samples it failed on this step over all processes; their number)."""
    names = list(groups.failures)
    counts = partitioner.gather(np.array([[groups.failures[n] for n in names]])).sum(0)
    total = int(partitioner.gather(np.array([len(groups.texts)])).sum())
    return dict(zip(names, counts.tolist(), strict=True)), total


def frac_equal_reward_groups(rewards: np.ndarray, group_size: int) -> float:
    """The fraction of groups whose rewards [B * G] are all equal: their advantages are zero,
    so they teach nothing (TRL's `frac_reward_zero_std`)."""
    groups = rewards.reshape(-1, group_size)
    return float((groups.max(1) == groups.min(1)).mean())


def rollout_scalars(groups: ScoredGroups, cfg: ml_collections.ConfigDict,
                    partitioner: Partitioner) -> dict[str, float]:
    """Reward and completion statistics of the sampled (on-policy) rows of every process."""
    on = partitioner.gather(~groups.off_policy)
    rewards, per_fn = partitioner.gather(groups.rewards)[on], partitioner.gather(groups.per_fn)[on]
    lengths = partitioner.gather(groups.mask.sum(1))[on]
    scalars = {"reward_mean": rewards.mean(), "reward_std": rewards.std(),
               "frac_reward_zero_std": frac_equal_reward_groups(
                   partitioner.gather(groups.rewards), cfg.group_size),
               "completion_length": lengths.mean(),
               "truncated_fraction": partitioner.gather(groups.truncated)[on].mean(),
               "completion_tokens": lengths.sum(), **completion_length_range(lengths)}
    for i, name in enumerate(cfg.reward_fns):
        applies = ~np.isnan(per_fn[:, i])  # None: the reward does not apply to the sample
        if applies.any():
            scalars[f"reward/{name}"] = per_fn[applies, i].mean()
    names = list(groups.failures)
    failures = partitioner.gather(np.array([[groups.failures[n] for n in names]])).sum(0)
    scalars.update({f"reward_failures/{n}": c for n, c in zip(names, failures, strict=True) if c})
    return scalars


class GRPOStep:
    """One GRPO step on a host batch: rollout -> decode and score on the host -> old log-probs
    (num_iterations > 1) and reference log-probs (beta > 0) -> `num_iterations` updates.

    The compiled programs are built once. `frozen` is the rest of the model state; the
    reference is `ref_params` with any LoRA adapters off, or with `ref_params=None` the
    policy's own parameters with adapters off. `rows` are the examples the batches' "index"
    refers to (rewards read their answers). A batch without "waveforms" holds text-only
    prompts.
    """

    def __init__(self, cfg: ml_collections.ConfigDict, *, graphdef: nnx.GraphDef,
                 tx: optax.GradientTransformation, state_shardings: TrainState,
                 frozen: nnx.State, ref_params: nnx.State | None,
                 rows: Sequence[ManifestRow], tokenizer, partitioner: Partitioner):
        self.cfg, self.rows, self.tokenizer, self.partitioner = cfg, rows, tokenizer, partitioner
        self.reward_fns = get_reward_fns(cfg.reward_fns)
        self.frozen = partitioner.shard_params(frozen)
        frozen_shardings = partitioner.param_shardings(self.frozen)
        self.ref_params = (partitioner.shard_params(ref_params)
                           if ref_params is not None and cfg.beta != 0.0 else None)
        sampling = SamplingConfig(max_new_tokens=cfg.max_completion_length,
                                  temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)
        self.sample = make_rollout_fn(graphdef, state_shardings.params, frozen_shardings,
                                      partitioner, sampling=sampling,
                                      group_size=cfg.group_size - cfg.num_off_policy,
                                      eos_ids=(tokenizer.eos_token_id, tokenizer.pad_token_id),
                                      pad_id=tokenizer.pad_token_id)
        self.logprobs, self.ref_logprobs = (
            make_logprob_fn(graphdef, state_shardings.params, frozen_shardings, partitioner,
                            group_size=cfg.group_size, temperature=cfg.temperature,
                            adapters=adapters, micro_batch_size=cfg.micro_batch_size)
            for adapters in (True, False))
        self.update = make_grpo_update(graphdef, tx, cfg, partitioner, state_shardings,
                                       frozen_shardings)

    def __call__(self, state: TrainState, host_batch: dict[str, np.ndarray],
                 rng: jax.Array) -> tuple[TrainState, dict[str, jax.Array], ScoredGroups]:
        """(new state, the last update's metrics, the scored rollout); `state` is donated."""
        cfg, frozen = self.cfg, self.frozen
        batch = device_batch(host_batch, self.partitioner)
        out = self.sample(state.params, frozen, batch, rng)
        groups = score_groups(out, host_batch, self.rows, self.tokenizer, self.reward_fns, cfg,
                              self.partitioner)
        group = groups.device_group(cfg, self.partitioner)
        # Log-probs of the policy that sampled (needed only when it gets several updates) and
        # of the reference (only when the KL term is on): no forward pass is spent otherwise.
        old_logp = (self.logprobs(state.params, frozen, batch, group["ids"], group["mask"])
                    if cfg.num_iterations > 1 else None)
        ref = state.params if self.ref_params is None else self.ref_params
        ref_logp = (self.ref_logprobs(ref, frozen, batch, group["ids"], group["mask"])
                    if cfg.beta != 0.0 else None)
        finite, gap = True, {}
        for i in range(cfg.num_iterations):
            state, metrics = self.update(state, frozen, batch, group, old_logp, ref_logp)
            finite = finite & metrics["finite"]
            if i == 0:  # the only update at the sampler's parameters
                gap = {k: v for k, v in metrics.items() if k.startswith("logp_diff/")}
        return state, {**metrics, **gap, "finite": finite}, groups


def run_grpo(cfg: ml_collections.ConfigDict, *, graphdef: nnx.GraphDef, params: nnx.State,
             frozen: nnx.State, ref_params: nnx.State | None, rows: Sequence[ManifestRow],
             tokenizer,
             spec: BatchSpec, workdir: pathlib.Path, seed: int,
             partitioner: Partitioner, skip_log: SkipLog | None = None,
             validate: Callable[[nnx.State], float] | None = None,
             num_workers: int = 0, health: HealthCheck | None = None) -> nnx.State:
    """Run `cfg.steps` GRPO steps from `params`, resuming from the stage's latest checkpoint.

    `params` are what trains, `frozen` the rest of the model state. The reference policy
    (beta > 0) is `ref_params` with any LoRA adapters switched off; `ref_params=None` means the
    policy's own parameters with adapters off, which is the base model when only adapters train
    (no second copy). `params` stay untouched (the train state starts from a copy, whose buffers
    each update donates), so they can serve as `ref_params`. `spec.batch_size` is this
    process's share of the prompts.

    With `validate` (params -> score, higher is better) and `cfg.eval_every` > 0, the starting
    parameters and those every `eval_every` steps are scored and the best are returned (the
    papers keep the best checkpoint on the validation split). `health` watches every step
    (default: stop on a non-finite one).
    """
    health = health or HealthCheck(stage="grpo")
    logp_watch = LogpDiffWatch(cfg.warn_logp_diff_above)
    reward_watch = RewardWatch(cfg.reward_failure_stop_fraction, cfg.reward_failure_stop_steps)
    tx = make_optimizer(learning_rate=cfg.learning_rate, warmup_steps=cfg.warmup_steps,
                        total_steps=cfg.steps * cfg.num_iterations,
                        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm)
    state, state_shardings = partitioner.train_state(params, tx, copy=True)
    data_iter = iter(training_dataset(rows, tokenizer, spec, num_batches=cfg.steps, seed=seed,
                                      process_index=jax.process_index(),
                                      process_count=jax.process_count(), skip_log=skip_log,
                                      num_workers=num_workers))
    ckpt = Checkpointer(workdir / "checkpoints", save_every=cfg.checkpoint_every)
    if ckpt.latest_step() is not None:
        state = ckpt.restore(state, data_iter)
        logging.info("[grpo] resumed from update %d", int(state.step))
    grpo_step = GRPOStep(cfg, graphdef=graphdef, tx=tx, state_shardings=state_shardings,
                         frozen=frozen, ref_params=ref_params, rows=rows, tokenizer=tokenizer,
                         partitioner=partitioner)
    writer = MetricWriter(workdir, "grpo", resume_step=int(state.step) // cfg.num_iterations)
    keeper = (BestKeeper(workdir / "best", validate, partitioner, cfg.eval_every)
              if validate is not None and cfg.eval_every else None)
    if keeper:
        keeper.start(state.params)
    base_rng = jax.random.key(seed)
    progress = StageProgress("grpo", cfg.steps, int(state.step) // cfg.num_iterations)
    while (step := int(state.step) // cfg.num_iterations) < cfg.steps:
        start = time.perf_counter()
        state, metrics, groups = grpo_step(state, next(data_iter),
                                           jax.random.fold_in(base_rng, step))
        health.after_step(step + 1, metrics)
        logp_watch.after_step(step + 1, metrics)
        progress.step_done(step + 1, {"reward": float(groups.rewards.mean())})
        reward_watch.after_step(step + 1, *gathered_failures(groups, partitioner),
                                groups.first_errors)
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            seconds = time.perf_counter() - start
            update = {k: v for k, v in jax.device_get(metrics).items() if k != "finite"}
            scalars = {**update, **rollout_scalars(groups, cfg, partitioner),
                       "step_seconds": seconds}
            scalars["tokens_per_s"] = scalars.pop("completion_tokens") / seconds
            writer.write(step + 1, scalars, progress.describe(step + 1))
        if cfg.log_completions_every and (step + 1) % cfg.log_completions_every == 0:
            shown = [f"[{groups.rewards[i]:.3f}] {groups.texts[i]!r} "
                     f"(reference: {groups.examples[i]['answer']!r})"
                     for i in range(cfg.group_size)]
            writer.write_text(step + 1, "completions", "\n".join(shown))
        if keeper and (score := keeper.after_step(step + 1, cfg.steps, state.params)) is not None:
            writer.write(step + 1, {"validation_score": score})
        ckpt.save(step + 1, state, data_iter, force=step + 1 == cfg.steps)
        stop_here("grpo", step + 1, functools.partial(ckpt.save_now, step + 1, state, data_iter))
    progress.close()
    ckpt.wait()
    ckpt.close()
    writer.close()
    return keeper.best(state.params) if keeper else state.params


