"""The `grpo` stage: GRPO on the task's training split (`train/grpo_stage.py`), and the checks
of its section (defaults: `stages/grpo_section.py`)."""

from __future__ import annotations

import ml_collections
from flax import nnx

from sallm_jax.rl.grpo_settings import GRPOSettings
from sallm_jax.runtime.user_errors import require
from sallm_jax.stages.checks import optimiser_numbers, positive_ints, validation
from sallm_jax.stages.common import kept_in_workdir, stage_inputs
from sallm_jax.train.grpo_stage import run_grpo

POSITIVE_KEYS = ("steps", "batch_size", "max_completion_length", "num_iterations",
                 "steps_per_generation", "checkpoint_every", "log_every")


def _schedule(section: ml_collections.ConfigDict, name: str) -> None:
    """Steps, generations and dynamic sampling's draws."""
    positive_ints(section, name, POSITIVE_KEYS)
    require(section.steps % section.steps_per_generation == 0, f"{name}.steps",
            f"a multiple of {name}.steps_per_generation = {section.steps_per_generation} (each "
            "generation is trained on in full)", section.steps)
    require(isinstance(section.dynamic_sampling, bool), f"{name}.dynamic_sampling",
            "True or False", section.dynamic_sampling)
    require(isinstance(section.dynamic_sampling_max_draws, int)
            and section.dynamic_sampling_max_draws >= 1, f"{name}.dynamic_sampling_max_draws",
            "an integer >= 1 (batches of prompts drawn at most to fill one training batch)",
            section.dynamic_sampling_max_draws)


def _sampling(section: ml_collections.ConfigDict, name: str) -> None:
    """The sampler's filters (temperature: `GRPOSettings`)."""
    require(0 < section.top_p <= 1, f"{name}.top_p", "a value in (0, 1]", section.top_p)
    require(section.top_k >= 0, f"{name}.top_k", "a value >= 0 (0 keeps all)", section.top_k)
    require(0 <= section.min_p <= 1, f"{name}.min_p", "a value in [0, 1] (0 keeps all)",
            section.min_p)
    require(section.repetition_penalty > 0, f"{name}.repetition_penalty",
            "a value > 0 (1 is off)", section.repetition_penalty)


def _watches(section: ml_collections.ConfigDict, name: str) -> None:
    """The reward-failure stop and the sampler-gap warning."""
    require(0 < section.reward_failure_stop_fraction <= 1,
            f"{name}.reward_failure_stop_fraction", "a fraction in (0, 1]",
            section.reward_failure_stop_fraction)
    require(section.reward_failure_stop_steps >= 1, f"{name}.reward_failure_stop_steps",
            "an integer >= 1", section.reward_failure_stop_steps)
    require(section.warn_logp_diff_above >= 0, f"{name}.warn_logp_diff_above",
            "a gap in nats >= 0 (0: never warn)", section.warn_logp_diff_above)


def _moving_reference(cfg: ml_collections.ConfigDict, name: str) -> None:
    """sync_ref_model: a KL term to move, a reference with weights of its own (not LoRA's base
    with the adapters off), alpha in (0, 1] and a sync interval of >= 1 update."""
    section = cfg[name]
    if not section.sync_ref_model:
        return
    require(section.beta > 0, f"{name}.sync_ref_model", f"False with {name}.beta = 0 (there "
            "is no reference without the KL term)", section.sync_ref_model)
    require(not cfg.lora.rank, f"{name}.sync_ref_model",
            f"False under LoRA (lora.rank = {cfg.lora.rank}): the reference is the base model "
            "with the adapters switched off, which shares the policy's frozen weights and has "
            "none of its own to move; train without LoRA (lora.rank = 0) for a moving reference",
            section.sync_ref_model)
    alpha = section.ref_model_mixup_alpha
    require(isinstance(alpha, int | float) and 0 < alpha <= 1, f"{name}.ref_model_mixup_alpha",
            "a weight in (0, 1] of the policy in the mix", alpha)
    require(isinstance(section.ref_model_sync_steps, int) and section.ref_model_sync_steps >= 1,
            f"{name}.ref_model_sync_steps", "an integer >= 1 (optimiser updates between syncs)",
            section.ref_model_sync_steps)


def check_grpo(cfg: ml_collections.ConfigDict, name: str) -> None:
    """The keys of GRPO section `cfg[name]`: those `GRPOSettings` types, and the optimiser,
    schedule, sampler, watches, moving reference and selection."""
    section = cfg[name]
    optimiser_numbers(section, name)
    _schedule(section, name)
    _watches(section, name)
    GRPOSettings.from_section(section)
    _moving_reference(cfg, name)
    _sampling(section, name)
    validation(section, name)


@kept_in_workdir
def train_grpo(experiment, name: str, start: nnx.State) -> nnx.State:
    """Stage `name` trained by GRPO on the task's training split; under LoRA with only the
    adapters training, the reference is the policy with its adapters off (no copy)."""
    cfg = experiment.cfg
    section = cfg[name]
    lora_reference = bool(cfg.lora.rank) and cfg.lora.trainable == "adapters"
    return run_grpo(section, params=start, ref_params=None if lora_reference else start,
                    **stage_inputs(experiment, name, section.max_completion_length))
