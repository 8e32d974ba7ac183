"""Start-up checks of an experiment config: every error is a `ConfigError` naming the offending
config key (one line and exit status 2 from the commands, `user_errors`).

A typo in the GRPO settings must fail before the SFT stage spends its minutes, not after.
"""

from __future__ import annotations

import math
import pathlib

import ml_collections

from sallm_jax.data.bad_input import POLICIES
from sallm_jax.metrics.names import HIGHER_IS_BETTER
from sallm_jax.rl.advantages import ADVANTAGE_ESTIMATORS
from sallm_jax.rl.grpo import (
    AGGREGATIONS,
    IMPORTANCE_LEVELS,
    MULTI_REWARD_NORMALIZATIONS,
    POLICY_TERMS,
)
from sallm_jax.rl.rewards import get_reward_fns
from sallm_jax.rl.rollout_correction import ROLLOUT_CORRECTIONS
from sallm_jax.stages import STAGES, training_stages
from sallm_jax.train.health import POLICIES as NONFINITE_POLICIES
from sallm_jax.train.wandb_mirror import import_wandb
from sallm_jax.user_errors import ConfigError

TRAINABLE = ("adapters", "adapters+projector", "adapters+projector+encoder", "all")
SFT_KEYS = ("steps", "batch_size", "max_target_tokens", "checkpoint_every", "log_every")
SCALE_REWARDS = ("group", "batch", "none")


def _optimiser_numbers(section: ml_collections.ConfigDict, name: str) -> None:
    """The optimiser settings of a training section: finite, the rates and clip positive."""
    for key, positive in (("learning_rate", True), ("max_grad_norm", True),
                          ("weight_decay", False)):
        value = section[key]
        ok = isinstance(value, int | float) and math.isfinite(value) and (
            value > 0 if positive else value >= 0)
        require(ok, f"{name}.{key}", "a finite value " + ("> 0" if positive else ">= 0"), value)


def require(ok: bool, key: str, expected: str, value) -> None:
    if not ok:
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")


def _positive_ints(cfg: ml_collections.ConfigDict, prefix: str, names: tuple[str, ...]) -> None:
    for name in names:
        value = cfg[name]
        require(isinstance(value, int) and value > 0, f"{prefix}.{name}", "a positive integer",
                 value)


def _advantage_estimator(rl: ml_collections.ConfigDict) -> None:
    """rl.advantage_estimator is registered; GDPO and rl.scale_rewards go with "grpo" only."""
    name = rl.advantage_estimator
    require(name in ADVANTAGE_ESTIMATORS, "rl.advantage_estimator",
            f"one of {sorted(ADVANTAGE_ESTIMATORS)}", name)
    if name != "grpo":
        require(rl.multi_reward_normalization == "sum", "rl.multi_reward_normalization",
                f"'sum' with rl.advantage_estimator={name!r} (per_reward is GDPO's own "
                "estimator, with 'grpo')", rl.multi_reward_normalization)
        require(rl.scale_rewards == "none", "rl.scale_rewards",
                f"'none' with rl.advantage_estimator={name!r} (the std scaling is grpo's; "
                f"{name} normalises as its paper does)", rl.scale_rewards)


def _finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _entropy_control(rl: ml_collections.ConfigDict) -> None:
    """rl.use_adaptive_entropy's target and bounds: 0 <= min <= entropy_coef <= max."""
    require(isinstance(rl.use_adaptive_entropy, bool), "rl.use_adaptive_entropy",
            "True or False", rl.use_adaptive_entropy)
    if not rl.use_adaptive_entropy:
        return
    require(_finite(rl.entropy_target) and rl.entropy_target > 0, "rl.entropy_target",
            "a mean entropy in nats > 0 (e.g. the logged entropy early in training)",
            rl.entropy_target)
    require(_finite(rl.entropy_coef_delta) and rl.entropy_coef_delta > 0,
            "rl.entropy_coef_delta", "a step > 0 (e.g. 0.005)", rl.entropy_coef_delta)
    require(_finite(rl.entropy_coef_min) and rl.entropy_coef_min >= 0, "rl.entropy_coef_min",
            "a bound >= 0", rl.entropy_coef_min)
    require(_finite(rl.entropy_coef_max) and rl.entropy_coef_max >= rl.entropy_coef_min,
            "rl.entropy_coef_max", f"a bound >= rl.entropy_coef_min = {rl.entropy_coef_min:g}",
            rl.entropy_coef_max)
    require(rl.entropy_coef_min <= rl.entropy_coef <= rl.entropy_coef_max, "rl.entropy_coef",
            f"the starting coefficient, within [rl.entropy_coef_min, rl.entropy_coef_max] = "
            f"[{rl.entropy_coef_min:g}, {rl.entropy_coef_max:g}] with rl.use_adaptive_entropy",
            rl.entropy_coef)


def _sequence_loss_types(rl: ml_collections.ConfigDict) -> None:
    """LUSPO's sequence-level ratio and per-sequence aggregation; VESPO's token-level ratio,
    kernel shapes and (folding the weights into its sequence weight) token-level correction."""
    if rl.loss_type == "luspo":
        require(rl.importance_sampling_level == "sequence", "rl.importance_sampling_level",
                "'sequence' with rl.loss_type='luspo' (GSPO's ratio)",
                rl.importance_sampling_level)
        require(rl.loss_aggregation == "grpo", "rl.loss_aggregation",
                "'grpo' with rl.loss_type='luspo' (the mean over sequences of their "
                "length-scaled terms)", rl.loss_aggregation)
    if rl.loss_type == "vespo":
        require(rl.importance_sampling_level == "token", "rl.importance_sampling_level",
                "'token' with rl.loss_type='vespo' (it forms the sequence weight itself)",
                rl.importance_sampling_level)
        require(rl.rollout_correction in ("", "token_truncate", "token_mask"),
                "rl.rollout_correction", "'' or a token mode with rl.loss_type='vespo' (its "
                "weights multiply the sequence weight)", rl.rollout_correction)
        for key in ("vespo_k_pos", "vespo_k_neg"):
            require(_finite(rl[key]) and rl[key] >= 0, f"rl.{key}",
                    "a power >= 0 of the kernel W^k exp(lambda (1 - W))", rl[key])
        for key in ("vespo_lambda_pos", "vespo_lambda_neg"):
            require(_finite(rl[key]) and rl[key] > 0, f"rl.{key}",
                    "a rate > 0 of the kernel W^k exp(lambda (1 - W))", rl[key])


def _moving_reference(cfg: ml_collections.ConfigDict) -> None:
    """rl.sync_ref_model: a KL term to move, a reference with weights of its own (not LoRA's
    base with the adapters off), alpha in (0, 1] and a sync interval of >= 1 update."""
    rl = cfg.rl
    if not rl.sync_ref_model:
        return
    require(rl.beta > 0, "rl.sync_ref_model", "False with rl.beta = 0 (there is no reference "
            "without the KL term)", rl.sync_ref_model)
    require(not cfg.lora.rank, "rl.sync_ref_model",
            f"False under LoRA (lora.rank = {cfg.lora.rank}): the reference is the base model "
            "with the adapters switched off, which shares the policy's frozen weights and has "
            "none of its own to move; train without LoRA (lora.rank = 0) for a moving reference",
            rl.sync_ref_model)
    require(_finite(rl.ref_model_mixup_alpha) and 0 < rl.ref_model_mixup_alpha <= 1,
            "rl.ref_model_mixup_alpha", "a weight in (0, 1] of the policy in the mix",
            rl.ref_model_mixup_alpha)
    require(isinstance(rl.ref_model_sync_steps, int) and rl.ref_model_sync_steps >= 1,
            "rl.ref_model_sync_steps", "an integer >= 1 (optimiser updates between syncs)",
            rl.ref_model_sync_steps)


def _rollout_correction(rl: ml_collections.ConfigDict) -> None:
    """rl.rollout_dtype and rl.rollout_correction with its bounds (0: none on that side)."""
    require(rl.rollout_dtype in ("", "float32", "bfloat16"), "rl.rollout_dtype",
            "'' (the trainer's compute dtype), float32 or bfloat16", rl.rollout_dtype)
    require(rl.rollout_correction in ("", *ROLLOUT_CORRECTIONS), "rl.rollout_correction",
            f"'' (off) or one of {ROLLOUT_CORRECTIONS}", rl.rollout_correction)
    require(_finite(rl.rollout_correction_min) and 0 <= rl.rollout_correction_min < 1,
            "rl.rollout_correction_min", "0 (no lower bound) or a ratio in (0, 1)",
            rl.rollout_correction_min)
    require(_finite(rl.rollout_correction_max) and (rl.rollout_correction_max == 0
                                                    or rl.rollout_correction_max > 1),
            "rl.rollout_correction_max", "0 (no upper bound) or a ratio > 1 (TRL's 3.0)",
            rl.rollout_correction_max)


def validate_config(cfg: ml_collections.ConfigDict) -> None:
    """Raise ConfigError for the first setting that cannot work."""
    stages, sections = tuple(cfg.stages), training_stages()
    require(bool(stages) and all(s in STAGES for s in stages), "stages",
             f"a non-empty sequence of {tuple(STAGES)}", stages)
    require(cfg.data.on_bad_input in POLICIES, "data.on_bad_input", f"one of {POLICIES}",
            cfg.data.on_bad_input)
    require(isinstance(cfg.data.num_workers, int) and cfg.data.num_workers >= 0,
            "data.num_workers", "a non-negative integer", cfg.data.num_workers)
    buckets = tuple(cfg.data.audio_buckets_s)
    require(bool(buckets) and all(b > 0 for b in buckets) and list(buckets) == sorted(buckets),
             "data.audio_buckets_s", "increasing positive durations in seconds", buckets)
    if not cfg.model.checkpoint:  # a checkpoint's own limits are checked when it loads
        max_seconds = cfg.model.audio.max_source_positions * 2 * 160 / 16000
        require(buckets[-1] <= max_seconds, "data.audio_buckets_s",
                f"at most {max_seconds:g} s (2 x model.audio.max_source_positions mel frames)",
                buckets)
    require(cfg.model.dtype in ("float32", "bfloat16"), "model.dtype", "float32 or bfloat16",
            cfg.model.dtype)
    require(cfg.model.compute_dtype in ("", "float32", "bfloat16"), "model.compute_dtype",
            "'' (model.dtype), float32 or bfloat16", cfg.model.compute_dtype)
    require(cfg.train.on_nonfinite in NONFINITE_POLICIES, "train.on_nonfinite",
            f"one of {NONFINITE_POLICIES}", cfg.train.on_nonfinite)
    require(cfg.train.max_nonfinite_skips >= 0, "train.max_nonfinite_skips", "an integer >= 0",
            cfg.train.max_nonfinite_skips)
    if cfg.logging.wandb:
        import_wandb()  # a ConfigError when the extra is not installed
        require(isinstance(cfg.logging.wandb_project, str) and bool(cfg.logging.wandb_project),
                "logging.wandb_project", "a W&B project name", cfg.logging.wandb_project)
    require(isinstance(cfg.lora.rank, int) and cfg.lora.rank >= 0, "lora.rank",
            "an integer >= 0", cfg.lora.rank)
    require(cfg.lora.trainable in TRAINABLE, "lora.trainable", f"one of {TRAINABLE}",
            cfg.lora.trainable)
    require(not cfg.init_params or pathlib.Path(cfg.init_params).expanduser().is_dir(),
            "init_params", "'' or a directory of saved parameters (<workdir>/<stage>/params)",
            cfg.init_params)
    require(not cfg.tokenizer.path or (pathlib.Path(cfg.tokenizer.path).expanduser()
                                       / "tokenizer.json").is_file(),
            "tokenizer.path", "'' or a directory holding tokenizer.json", cfg.tokenizer.path)
    if cfg.data.name == "manifest":
        for split in ("train", "test"):
            key = f"{split}_manifest"
            require(bool(cfg.data[key]), f"data.{key}", "a manifest path", cfg.data[key])
    for index, stage in enumerate(stages):
        if stage in sections:
            key = sections[stage]
            start = cfg[key].start
            earlier = [s for s in stages[:index] if s in sections]
            require(start in ("", "init") or start in earlier, f"{key}.start",
                    f"'' (the previous training stage), 'init' (the initial parameters) or one "
                    f"of the training stages before {stage!r} in stages, {earlier}", start)
    for stage in ("base", "warmup", "sft"):
        if stage in stages:
            _positive_ints(cfg[stage], stage, SFT_KEYS)
            require(isinstance(cfg[stage].eval_every, int) and cfg[stage].eval_every >= 0,
                    f"{stage}.eval_every", "an integer >= 0", cfg[stage].eval_every)
            _optimiser_numbers(cfg[stage], stage)
            require(cfg[stage].ctc_weight >= 0, f"{stage}.ctc_weight", "a value >= 0",
                    cfg[stage].ctc_weight)
    if "base" in stages:
        require(not cfg.model.checkpoint, "model.checkpoint",
                "'' with the base stage (it trains the configured sizes from scratch; drop "
                "'base' from stages to start from a checkpoint)", cfg.model.checkpoint)
        require(not cfg.tokenizer.path, "tokenizer.path",
                "'' with the base stage (the base model brings its own tokenizer)",
                cfg.tokenizer.path)
        _positive_ints(cfg.base, "base", ("num_train", "num_validation"))
    if "grpo" in stages:
        rl = cfg.rl
        _optimiser_numbers(rl, "rl")
        require(0 < rl.reward_failure_stop_fraction <= 1, "rl.reward_failure_stop_fraction",
                "a fraction in (0, 1]", rl.reward_failure_stop_fraction)
        require(rl.reward_failure_stop_steps >= 1, "rl.reward_failure_stop_steps",
                "an integer >= 1", rl.reward_failure_stop_steps)
        _positive_ints(rl, "rl", ("steps", "batch_size", "max_completion_length",
                                  "num_iterations", "steps_per_generation", "checkpoint_every",
                                  "log_every"))
        require(rl.steps % rl.steps_per_generation == 0, "rl.steps",
                f"a multiple of rl.steps_per_generation = {rl.steps_per_generation} (each "
                "generation is trained on in full)", rl.steps)
        require(isinstance(rl.dynamic_sampling, bool), "rl.dynamic_sampling", "True or False",
                rl.dynamic_sampling)
        require(isinstance(rl.dynamic_sampling_max_draws, int)
                and rl.dynamic_sampling_max_draws >= 1, "rl.dynamic_sampling_max_draws",
                "an integer >= 1 (batches of prompts drawn at most to fill one training batch)",
                rl.dynamic_sampling_max_draws)
        require(isinstance(rl.group_size, int) and rl.group_size >= 2, "rl.group_size",
                 "an integer >= 2 (advantages compare samples within a group)", rl.group_size)
        require(rl.loss_type in POLICY_TERMS, "rl.loss_type", f"one of {sorted(POLICY_TERMS)}",
                rl.loss_type)
        eps_high = rl.epsilon if rl.epsilon_high is None else rl.epsilon_high
        if rl.loss_type == "cispo":
            require(eps_high > 1, "rl.epsilon_high", "the cap of CISPO's importance weight, > 1 "
                    "(e.g. 5.0)", rl.epsilon_high)
        require(rl.delta == 0 or rl.delta > 1 + eps_high, "rl.delta",
                f"0 (off) or a cap above 1 + rl.epsilon_high = {1 + eps_high:g}", rl.delta)
        require(rl.sapo_tau_pos > 0 and rl.sapo_tau_neg > 0, "rl.sapo_tau_pos",
                "positive temperatures (rl.sapo_tau_pos, rl.sapo_tau_neg)",
                (rl.sapo_tau_pos, rl.sapo_tau_neg))
        require(0 < rl.top_entropy_quantile <= 1, "rl.top_entropy_quantile",
                "a fraction in (0, 1] of the completion tokens kept (1.0: all)",
                rl.top_entropy_quantile)
        require(math.isfinite(rl.entropy_coef), "rl.entropy_coef", "a finite number",
                rl.entropy_coef)
        require(math.isfinite(rl.off_policy_mask_threshold) and rl.off_policy_mask_threshold >= 0,
                "rl.off_policy_mask_threshold", "0 (off) or a mean log-ratio > 0 (e.g. 0.5)",
                rl.off_policy_mask_threshold)
        require(not rl.use_bias_correction_kl or rl.beta > 0, "rl.use_bias_correction_kl",
                "False with rl.beta = 0 (it weights the KL term, which is then off)",
                rl.use_bias_correction_kl)
        _entropy_control(rl)
        _rollout_correction(rl)
        _moving_reference(cfg)
        _sequence_loss_types(rl)
        require(rl.warn_logp_diff_above >= 0, "rl.warn_logp_diff_above",
                "a gap in nats >= 0 (0: never warn)", rl.warn_logp_diff_above)
        require(rl.loss_aggregation in AGGREGATIONS, "rl.loss_aggregation",
                 f"one of {sorted(AGGREGATIONS)}", rl.loss_aggregation)
        require(rl.importance_sampling_level in IMPORTANCE_LEVELS,
                 "rl.importance_sampling_level", f"one of {IMPORTANCE_LEVELS}",
                 rl.importance_sampling_level)
        require(isinstance(rl.num_off_policy, int) and 0 <= rl.num_off_policy < rl.group_size,
                 "rl.num_off_policy", "an integer in [0, rl.group_size)", rl.num_off_policy)
        require(rl.scale_rewards in SCALE_REWARDS, "rl.scale_rewards",
                 f"one of {SCALE_REWARDS}", rl.scale_rewards)
        _advantage_estimator(rl)
        require(rl.beta >= 0, "rl.beta", "a value >= 0", rl.beta)
        require(rl.epsilon > 0, "rl.epsilon", "a value > 0", rl.epsilon)
        require(rl.epsilon_high is None or rl.epsilon_high > 0, "rl.epsilon_high",
                 "None or a value > 0", rl.epsilon_high)
        require(rl.temperature > 0, "rl.temperature", "a value > 0 (sampling)", rl.temperature)
        require(0 < rl.top_p <= 1, "rl.top_p", "a value in (0, 1]", rl.top_p)
        require(rl.top_k >= 0, "rl.top_k", "a value >= 0 (0 keeps all)", rl.top_k)
        require(0 <= rl.min_p <= 1, "rl.min_p", "a value in [0, 1] (0 keeps all)", rl.min_p)
        require(rl.repetition_penalty > 0, "rl.repetition_penalty", "a value > 0 (1 is off)",
                rl.repetition_penalty)
        require(len(rl.reward_weights) == len(rl.reward_fns), "rl.reward_weights",
                 f"{len(rl.reward_fns)} weights, one per entry of rl.reward_fns",
                 rl.reward_weights)
        try:
            get_reward_fns(rl.reward_fns)
        except ValueError as error:  # its message names rl.reward_fns
            raise ConfigError(str(error)) from error
        require(rl.multi_reward_normalization in MULTI_REWARD_NORMALIZATIONS,
                "rl.multi_reward_normalization", f"one of {MULTI_REWARD_NORMALIZATIONS}",
                rl.multi_reward_normalization)
        require(rl.select_on in HIGHER_IS_BETTER, "rl.select_on",
                f"a metric where higher is better, one of {HIGHER_IS_BETTER}", rl.select_on)
    if "eval" in stages:
        _positive_ints(cfg.eval, "eval", ("batch_size", "max_new_tokens", "num_samples"))
        require(cfg.eval.temperature > 0 or cfg.eval.num_samples == 1, "eval.num_samples",
                "1 with greedy decoding (eval.temperature 0)", cfg.eval.num_samples)
        require(cfg.eval.temperature >= 0, "eval.temperature", "a value >= 0 (0 is greedy)",
                 cfg.eval.temperature)
        require(bool(cfg.eval.splits), "eval.splits", "at least one split", cfg.eval.splits)
