"""One GRPO step on the device and host: rollout -> rewards (host) -> group advantages ->
clipped-ratio update.

One step, as data: B prompts with audio -> `rollout` samples G completions each ([B * G, C], the
prefill done once per prompt) -> decoded and scored on the host -> rewards [B, G] back to the
device -> advantages, reference log-probs (when beta > 0) and old log-probs (when the batch is
updated after the parameters moved: num_iterations > 1, or a later batch of a generation of
steps_per_generation > 1) -> `grpo_loss` -> AdamW update with the state's buffers donated.
The stage around it (generations, watches, checkpoints) is `train/grpo_stage.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from sallm_jax.data.chat_format import ChatFormat
from sallm_jax.data.manifest import ManifestRow
from sallm_jax.models.layer_scan import compiler_options
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.rl.advantages import ADVANTAGE_ESTIMATORS
from sallm_jax.rl.diagnostics import logp_difference, masked_mean
from sallm_jax.rl.entropy_control import (
    EXTRAS_KEY,
    applied_coefficient,
    init_entropy_control,
    next_entropy_control,
)
from sallm_jax.rl.grpo import (
    grpo_loss,
    high_entropy_mask,
    micro_batch_weights,
    per_reward_advantages,
)
from sallm_jax.rl.policy import completion_logprobs, completion_logprobs_and_entropy, merge_policy
from sallm_jax.rl.reference import REFERENCE_KEY, mixed_reference, sync_due
from sallm_jax.rl.rewards import get_reward_fns
from sallm_jax.rl.rollout import Rollout, SamplingConfig, make_rollout_fn
from sallm_jax.rl.rollout_correction import rollout_correction_stats, rollout_correction_weights
from sallm_jax.rl.scoring import (
    ScoredGroups,
    local_rollout,
    score_groups,
)
from sallm_jax.train.dynamic_sampling import fill_batch
from sallm_jax.train.generation import (
    SavedGeneration,
)
from sallm_jax.train.microbatch import accumulate, join_prompts, split_prompts
from sallm_jax.train.state import (
    TrainState,
    apply_gradients,
)


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
                   out_shardings=batch, compiler_options=compiler_options())


def batch_advantages(cfg: ml_collections.ConfigDict, rewards: jax.Array,
                     per_fn: jax.Array | None, lengths: jax.Array) -> jax.Array:
    """Advantages [B, G] of a batch's rewards [B, G] by `cfg.advantage_estimator` (or, under
    `multi_reward_normalization="per_reward"`, GDPO's of each reward function's values
    [B, G, F]); `lengths` [B, G] the completions' token counts in the loss."""
    if cfg.multi_reward_normalization == "per_reward":
        weights = jnp.asarray(cfg.reward_weights, jnp.float32)
        return per_reward_advantages(per_fn, weights, cfg.scale_rewards)
    return ADVANTAGE_ESTIMATORS[cfg.advantage_estimator](rewards, lengths,
                                                         scale=cfg.scale_rewards)


def grpo_extras(cfg: ml_collections.ConfigDict) -> dict:
    """The train state's `extras` at the start of a GRPO stage: the adaptive entropy
    controller's initial state with `cfg.use_adaptive_entropy`, else none."""
    return {EXTRAS_KEY: init_entropy_control(cfg.entropy_coef)} if cfg.use_adaptive_entropy else {}


def rollout_weights(cfg: ml_collections.ConfigDict, old_logp: jax.Array,
                    rollout_logp: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`rollout_correction_weights` under `cfg.rollout_correction` and its bounds."""
    return rollout_correction_weights(old_logp, rollout_logp, mask, cfg.rollout_correction,
                                      low=cfg.rollout_correction_min or None,
                                      high=cfg.rollout_correction_max or None)


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

    `cfg.rollout_correction` weighs the policy term by `rollout_correction_weights` of the
    trainer's log-probs at the sampler's parameters (`old_logp`, or this update's own when
    None) against "rollout_logp" (then required), logging "rollout_is/*". With
    `cfg.use_adaptive_entropy` the entropy coefficient is the state's controller's
    (`extras["entropy_control"]`, see `grpo_extras`), moved after the update by the entropy
    it measured; logs "entropy_coef" (the next) and "entropy_coef/applied". With
    `cfg.rollout_dtype` set, `off_policy_mask_threshold`'s mask reads "rollout_logp".
    """
    adaptive, correction = cfg.use_adaptive_entropy, cfg.rollout_correction
    # A sampler at another precision drew the batch: the off-policy mask reads its log-probs.
    sampler_mask = bool(cfg.rollout_dtype) and cfg.off_policy_mask_threshold > 0

    def loss_fn(params, frozen, inputs, entropy_coef):
        logp, entropy = completion_logprobs_and_entropy(
            merge_policy(graphdef, params, frozen), inputs["batch"], inputs["ids"], inputs["mask"],
            group_size=cfg.group_size, temperature=cfg.temperature)
        old = jax.lax.stop_gradient(logp) if inputs["old_logp"] is None else inputs["old_logp"]
        mask = inputs["mask"].astype(jnp.float32)
        weights = (rollout_weights(cfg, old, inputs["rollout_logp"], mask)[0] if correction
                   else None)
        loss, metrics = grpo_loss(
            logp, old, inputs["ref_logp"], inputs["advantages"], inputs["mask"].astype(jnp.float32),
            epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high, beta=cfg.beta,
            aggregation=cfg.loss_aggregation,
            importance_sampling_level=cfg.importance_sampling_level,
            off_policy=inputs["off_policy"] if cfg.num_off_policy else None,
            loss_type=cfg.loss_type, delta=cfg.delta or None, sapo_tau_pos=cfg.sapo_tau_pos,
            sapo_tau_neg=cfg.sapo_tau_neg, vespo_k_pos=cfg.vespo_k_pos,
            vespo_lambda_pos=cfg.vespo_lambda_pos, vespo_k_neg=cfg.vespo_k_neg,
            vespo_lambda_neg=cfg.vespo_lambda_neg, entropy=entropy,
            top_entropy_quantile=cfg.top_entropy_quantile, entropy_coef=entropy_coef,
            off_policy_mask_threshold=cfg.off_policy_mask_threshold,
            use_bias_correction_kl=cfg.use_bias_correction_kl, rollout_weights=weights,
            sampler_logp=inputs["rollout_logp"] if sampler_mask else None)
        per_token = {"logp": logp, "entropy": entropy}
        if adaptive:  # the tokens whose entropy the controller measures: the policy term's
            per_token["kept"] = (high_entropy_mask(entropy, mask, cfg.top_entropy_quantile)
                                 if cfg.top_entropy_quantile < 1.0 else mask > 0)
        return loss, (metrics, jax.lax.stop_gradient(per_token))

    def update(state: TrainState, frozen, batch, group, old_logp, ref_logp):
        if (correction or sampler_mask) and group.get("rollout_logp") is None:
            raise ValueError("rl.rollout_correction / rl.rollout_dtype: the batch holds no "
                             "sampler log-probs (group['rollout_logp'])")
        if adaptive and EXTRAS_KEY not in state.extras:
            raise ValueError("rl.use_adaptive_entropy: the train state holds no entropy "
                             "controller (start it with extras=grpo_extras(cfg))")
        inputs = {"batch": batch, "ids": group["ids"], "mask": group["mask"],
                  "off_policy": group["off_policy"], "old_logp": old_logp, "ref_logp": ref_logp,
                  "rollout_logp": (group.get("rollout_logp") if correction or sampler_mask
                                   else None),
                  "advantages": batch_advantages(
                      cfg, group["rewards"], group.get("per_fn"),
                      group["mask"].sum(-1).reshape(group["rewards"].shape)).reshape(-1)}
        control = state.extras[EXTRAS_KEY] if adaptive else None
        coef = applied_coefficient(control, cfg.entropy_target) if adaptive else cfg.entropy_coef
        grad_fn = jax.value_and_grad(lambda p, r: loss_fn(p, frozen, r, coef), has_aux=True)
        num_prompts = group["rewards"].shape[0]
        if not cfg.micro_batch_size or cfg.micro_batch_size >= num_prompts:
            (loss, (metrics, per_token)), grads = grad_fn(state.params, inputs)
        else:
            k = num_prompts // cfg.micro_batch_size
            chunks = {**split_prompts({n: v for n, v in inputs.items() if n != "batch"}, k,
                                      cfg.group_size), "batch": split_prompts(batch, k)}
            weights = micro_batch_weights(cfg.loss_aggregation, chunks["mask"])
            (loss, (metrics, per_token)), grads = accumulate(grad_fn, state.params, chunks,
                                                             weights, per_chunk=True)
            per_token = jax.tree.map(lambda x: join_prompts(x, cfg.group_size), per_token)
        sampled = group["mask"] * ~group["off_policy"][:, None]
        metrics = {**metrics, "entropy": masked_mean(per_token["entropy"], sampled)}
        if group.get("rollout_logp") is not None:
            metrics.update(logp_difference(group["rollout_logp"], per_token["logp"], sampled))
        if correction:
            old = per_token["logp"] if old_logp is None else old_logp
            metrics.update(rollout_correction_stats(
                *rollout_weights(cfg, old, group["rollout_logp"], sampled), sampled, correction))
        metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads)}
        state, metrics["finite"] = apply_gradients(state, grads, tx, loss)
        if adaptive:  # a skipped (non-finite) update leaves the controller too
            moved = next_entropy_control(
                control, masked_mean(per_token["entropy"], sampled * per_token["kept"]),
                target=cfg.entropy_target, delta=cfg.entropy_coef_delta,
                coef_min=cfg.entropy_coef_min, coef_max=cfg.entropy_coef_max)
            moved = jax.tree.map(lambda n, o: jnp.where(metrics["finite"], n, o), moved, control)
            state = state._replace(extras={**state.extras, EXTRAS_KEY: moved})
            metrics.update({"entropy_coef": moved.coef, "entropy_coef/applied": coef})
        return state, metrics

    batch = partitioner.batch
    return jax.jit(update, in_shardings=(state_shardings, frozen_shardings, batch, batch, batch,
                                         batch),
                   out_shardings=(state_shardings, partitioner.replicated), donate_argnums=0,
                   compiler_options=compiler_options())


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
    """GRPO on host batches: a generation (`generate`: every batch rolled out at the same
    parameters, decoded and scored on the host, old log-probs where an update will come after
    the parameters moved) and then each batch's `num_iterations` updates (`train`, reference
    log-probs when beta > 0). Calling it runs a generation of one batch and its updates.

    The compiled programs are built once. `frozen` is the rest of the model state; the
    reference is `ref_params` with any LoRA adapters off, or with `ref_params=None` the
    policy's own parameters with adapters off; with `cfg.sync_ref_model` it is the train
    state's `extras[REFERENCE_KEY]`, mixed toward the policy after every
    `cfg.ref_model_sync_steps`-th update (`rl/reference.py`). `rows` are the examples the
    batches' "index" refers to (rewards read their answers). A batch without "waveforms" holds
    text-only prompts.
    """

    def __init__(self, cfg: ml_collections.ConfigDict, *, graphdef: nnx.GraphDef,
                 tx: optax.GradientTransformation, state_shardings: TrainState,
                 frozen: nnx.State, ref_params: nnx.State | None,
                 rows: Sequence[ManifestRow], chat: ChatFormat, partitioner: Partitioner):
        self.cfg, self.rows, self.chat, self.partitioner = cfg, rows, chat, partitioner
        self.reward_fns = get_reward_fns(cfg.reward_fns)
        self.frozen = partitioner.shard_params(frozen)
        frozen_shardings = partitioner.param_shardings(self.frozen)
        # A moving reference (rl.sync_ref_model) lives in the train state, not here.
        self.moving_reference = cfg.sync_ref_model and cfg.beta != 0.0
        self.ref_params = (partitioner.shard_params(ref_params) if ref_params is not None
                           and cfg.beta != 0.0 and not self.moving_reference else None)
        self.sync_reference = jax.jit(
            lambda state: state._replace(extras={**state.extras, REFERENCE_KEY: mixed_reference(
                state.extras[REFERENCE_KEY], state.params, cfg.ref_model_mixup_alpha)}),
            in_shardings=(state_shardings,), out_shardings=state_shardings, donate_argnums=0)
        sampling = SamplingConfig(max_new_tokens=cfg.max_completion_length,
                                  temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                                  min_p=cfg.min_p, repetition_penalty=cfg.repetition_penalty)
        self.sample = make_rollout_fn(graphdef, state_shardings.params, frozen_shardings,
                                      partitioner, sampling=sampling,
                                      group_size=cfg.group_size - cfg.num_off_policy,
                                      eos_ids=chat.stop_ids, pad_id=chat.pad_id,
                                      compute_dtype=cfg.rollout_dtype)
        self.logprobs, self.ref_logprobs = (
            make_logprob_fn(graphdef, state_shardings.params, frozen_shardings, partitioner,
                            group_size=cfg.group_size, temperature=cfg.temperature,
                            adapters=adapters, micro_batch_size=cfg.micro_batch_size)
            for adapters in (True, False))
        self.update = make_grpo_update(graphdef, tx, cfg, partitioner, state_shardings,
                                       frozen_shardings)

    def _scored(self, host: dict[str, np.ndarray], local: Rollout,
                batch: dict[str, jax.Array] | None = None) -> GenerationBatch:
        groups = score_groups(local, host, self.rows, self.chat.tokenizer, self.reward_fns,
                              self.cfg)
        batch = self.partitioner.device_batch(host) if batch is None else batch
        return GenerationBatch(host, local, groups, batch,
                               groups.device_group(self.cfg, self.partitioner), None)

    def _rollout(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array) -> Rollout:
        return local_rollout(self.sample(state.params, self.frozen, batch, rng), self.partitioner)

    def generate(self, state: TrainState, hosts: Sequence[dict[str, np.ndarray]],
                 rngs: Sequence[jax.Array]) -> list[GenerationBatch]:
        """Roll out every batch at `state`'s parameters, score them, and compute the old
        log-probs of each batch that gets an update after the parameters moved: every batch
        when num_iterations > 1, all but the first otherwise (its single update is at the
        sampler's parameters, where the ratio is exactly 1 without them)."""
        batches = [self.partitioner.device_batch(host) for host in hosts]
        local = [self._rollout(state, batch, rng) for batch, rng in zip(batches, rngs, strict=True)]
        return self._with_old_logp(state, [self._scored(*b) for b in zip(hosts, local, batches,
                                                                         strict=True)])

    def generate_filled(self, state: TrainState, draw: Callable[[], dict[str, np.ndarray]],
                        rngs: Sequence[jax.Array]) -> list[GenerationBatch]:
        """`generate` with each batch filled by dynamic sampling (`fill_batch`): batches of
        prompts from `draw` until the groups with a reward spread fill it. The kept groups are
        scored again from their completions, as a resumed generation's are (the same values)."""
        def rollout(host, rng):
            return self._rollout(state, self.partitioner.device_batch(host), rng)

        def score(out, host):
            return score_groups(out, host, self.rows, self.chat.tokenizer, self.reward_fns,
                                self.cfg)

        return self._with_old_logp(state, [
            self._scored(*fill_batch(draw, rollout, score, rng, self.cfg, self.partitioner,
                                     self.chat.pad_id)) for rng in rngs])

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
        """`num_iterations` updates on one batch of a generation: (new state, the last
        update's metrics, with the sampler-vs-trainer gap at the sampler's parameters);
        `state` is donated."""
        cfg, frozen = self.cfg, self.frozen
        # Log-probs of the reference only when the KL term is on: no forward pass otherwise.
        ref = state.params if self.ref_params is None else self.ref_params
        if self.moving_reference:
            ref = state.extras[REFERENCE_KEY]
        ref_logp = (self.ref_logprobs(ref, frozen, b.batch, b.group["ids"], b.group["mask"])
                    if cfg.beta != 0.0 else None)
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
