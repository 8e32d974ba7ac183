"""The compiled GRPO programs: completion log-probs, and the update (advantages -> `grpo_loss` ->
AdamW). B prompts x G completions, prompt-major; C completion tokens."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from sallm_jax.models.layer_scan import compiler_options
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.rl.advantages import batch_advantages
from sallm_jax.rl.aggregation import micro_batch_weights
from sallm_jax.rl.diagnostics import logp_difference, masked_mean
from sallm_jax.rl.entropy_control import (
    EXTRAS_KEY,
    applied_coefficient,
    init_entropy_control,
    next_entropy_control,
)
from sallm_jax.rl.grpo import grpo_loss, high_entropy_mask
from sallm_jax.rl.grpo_settings import GRPOSettings
from sallm_jax.rl.policy import completion_logprobs, completion_logprobs_and_entropy, merge_policy
from sallm_jax.rl.rollout_correction import rollout_correction_stats
from sallm_jax.train.microbatch import accumulate, join_prompts, split_prompts
from sallm_jax.train.state import TrainState, apply_gradients


def make_logprob_fn(graphdef: nnx.GraphDef, param_shardings: nnx.State,
                    frozen_shardings: nnx.State, partitioner: Partitioner, *, group_size: int,
                    temperature: float, adapters: bool = True, micro_batch_size: int = 0):
    """jit(fn(params, frozen, batch, ids, mask) -> [B * G, C] log-probs) for the old policy and
    (`adapters=False` under LoRA) the reference; `micro_batch_size` prompts at a time."""

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


def grpo_extras(settings: GRPOSettings) -> dict:
    """The GRPO train state's initial `extras`: the entropy controller if use_adaptive_entropy."""
    control = settings.entropy_control
    return ({EXTRAS_KEY: init_entropy_control(control.entropy_coef)}
            if control.use_adaptive_entropy else {})


def make_grpo_update(graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                     settings: GRPOSettings, partitioner: Partitioner,
                     state_shardings: TrainState, frozen_shardings: nnx.State):
    """jit(update(state, frozen, batch, group, old_logp, ref_logp) -> (state, metrics)).

    `state` is donated. `group`: "ids", "mask" [B * G, C], "rewards" [B, G], "off_policy" [B * G];
    "per_fn" [B, G, F] under per_reward normalisation (NaN: not applicable); "rollout_logp" [B * G,
    C] (the sampler's; logs "logp_diff/mean", "/max") when given, required when `settings.loss`
    reads it. `old_logp` / `ref_logp` may be None (one update per rollout / beta == 0).
    micro_batch_size accumulates loss and gradients over micro-batches of that many prompts (each
    its own top_entropy_quantile threshold). Logs "entropy" (sampled tokens), "rollout_is/*" against
    `old_logp` (or this update's), and with use_adaptive_entropy "entropy_coef" (next) and
    "entropy_coef/applied" (the controller in `extras`, moved by finite updates). ValueError when
    "rollout_logp" or the controller is needed and missing.
    """
    s, control_settings = settings, settings.entropy_control
    adaptive, correction = control_settings.use_adaptive_entropy, s.loss.rollout_correction

    def loss_fn(params, frozen, inputs, loss_settings):
        logp, entropy = completion_logprobs_and_entropy(
            merge_policy(graphdef, params, frozen), inputs["batch"], inputs["ids"], inputs["mask"],
            group_size=s.group_size, temperature=s.temperature)
        old = jax.lax.stop_gradient(logp) if inputs["old_logp"] is None else inputs["old_logp"]
        mask = inputs["mask"].astype(jnp.float32)
        loss, metrics = grpo_loss(
            logp, old, inputs["ref_logp"], inputs["advantages"], mask, loss_settings,
            off_policy=inputs["off_policy"] if s.num_off_policy else None, entropy=entropy,
            rollout_logp=inputs["rollout_logp"])
        per_token = {"logp": logp, "entropy": entropy}
        if adaptive:  # the tokens whose entropy the controller measures: the policy term's
            quantile = loss_settings.top_entropy_quantile
            per_token["kept"] = (high_entropy_mask(entropy, mask, quantile) if quantile < 1.0
                                 else mask > 0)
        return loss, (metrics, jax.lax.stop_gradient(per_token))

    def update(state: TrainState, frozen, batch, group, old_logp, ref_logp):
        if s.loss.needs_rollout_logp and group.get("rollout_logp") is None:
            raise ValueError("grpo.rollout_correction / grpo.rollout_dtype: the batch holds no "
                             "sampler log-probs (group['rollout_logp'])")
        if adaptive and EXTRAS_KEY not in state.extras:
            raise ValueError("grpo.use_adaptive_entropy: the train state holds no entropy "
                             "controller (start it with extras=grpo_extras(settings))")
        lengths = group["mask"].sum(-1).reshape(group["rewards"].shape)
        inputs = {"batch": batch, "ids": group["ids"], "mask": group["mask"],
                  "off_policy": group["off_policy"], "old_logp": old_logp, "ref_logp": ref_logp,
                  "rollout_logp": group.get("rollout_logp") if s.loss.needs_rollout_logp else None,
                  "advantages": batch_advantages(s.advantages, group["rewards"],
                                                 group.get("per_fn"), lengths).reshape(-1)}
        control = state.extras[EXTRAS_KEY] if adaptive else None
        loss_settings = s.loss
        if adaptive:
            coef = applied_coefficient(control, control_settings.entropy_target)
            loss_settings = dataclasses.replace(s.loss, entropy_coef=coef)
        grad_fn = jax.value_and_grad(lambda p, r: loss_fn(p, frozen, r, loss_settings),
                                     has_aux=True)
        num_prompts = group["rewards"].shape[0]
        if not s.micro_batch_size or s.micro_batch_size >= num_prompts:
            (loss, (metrics, per_token)), grads = grad_fn(state.params, inputs)
        else:
            k = num_prompts // s.micro_batch_size
            chunks = {**split_prompts({n: v for n, v in inputs.items() if n != "batch"}, k,
                                      s.group_size), "batch": split_prompts(batch, k)}
            weights = micro_batch_weights(s.loss.loss_aggregation, chunks["mask"])
            (loss, (metrics, per_token)), grads = accumulate(grad_fn, state.params, chunks,
                                                             weights, per_chunk=True)
            per_token = jax.tree.map(lambda x: join_prompts(x, s.group_size), per_token)
        sampled = group["mask"] * ~group["off_policy"][:, None]
        metrics = {**metrics, "entropy": masked_mean(per_token["entropy"], sampled)}
        if group.get("rollout_logp") is not None:
            metrics.update(logp_difference(group["rollout_logp"], per_token["logp"], sampled))
        if correction:
            old = per_token["logp"] if old_logp is None else old_logp
            metrics.update(rollout_correction_stats(
                *s.loss.rollout_weights(old, group["rollout_logp"], sampled), sampled,
                correction))
        metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads)}
        state, metrics["finite"] = apply_gradients(state, grads, tx, loss)
        if adaptive:  # a skipped (non-finite) update leaves the controller too
            c = control_settings
            moved = next_entropy_control(
                control, masked_mean(per_token["entropy"], sampled * per_token["kept"]),
                target=c.entropy_target, delta=c.entropy_coef_delta,
                coef_min=c.entropy_coef_min, coef_max=c.entropy_coef_max)
            moved = jax.tree.map(lambda n, o: jnp.where(metrics["finite"], n, o), moved, control)
            state = state._replace(extras={**state.extras, EXTRAS_KEY: moved})
            metrics.update({"entropy_coef": moved.coef, "entropy_coef/applied": coef})
        return state, metrics

    batch = partitioner.batch
    return jax.jit(update, in_shardings=(state_shardings, frozen_shardings, batch, batch, batch,
                                         batch),
                   out_shardings=(state_shardings, partitioner.replicated), donate_argnums=0,
                   compiler_options=compiler_options())
