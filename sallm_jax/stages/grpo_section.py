"""The defaults of the `grpo` section, which the GRPO stage reads (`stages/grpo.py`)."""

import ml_collections

from sallm_jax.rl.policy_terms import term_defaults


def grpo_section() -> ml_collections.ConfigDict:
    """Every GRPO knob at its default; a registered policy term's own settings that are not
    listed here are added at their dataclass's defaults (`term_defaults`)."""
    c = ml_collections.ConfigDict()
    c.start = "warmup"
    c.steps = 100
    c.batch_size = 16  # prompts per step; each gets group_size samples
    c.group_size = 8
    c.learning_rate = 4e-4
    c.warmup_steps = 5
    c.weight_decay = 0.0
    c.max_grad_norm = 1.0
    c.beta = 0.02
    # A reference that moves (TR-DPO, as TRL's sync_ref_model): every ref_model_sync_steps
    # optimiser updates it becomes ref_model_mixup_alpha x policy + (1 - alpha) x itself.
    # Needs beta > 0; not under LoRA, whose reference is the base with the adapters off.
    c.sync_ref_model = False
    c.ref_model_mixup_alpha = 0.6
    c.ref_model_sync_steps = 512
    c.epsilon = 0.2
    c.epsilon_high = 0.2
    c.loss_aggregation = "dapo"  # or grpo, dr_grpo, bnpo
    c.importance_sampling_level = "token"  # or "sequence"
    # The policy term (sallm_jax/rl/policy_terms.py POLICY_TERMS): "grpo" (clipped
    # surrogate), "cispo" (capped, stop-gradient weight; epsilon_high is then the cap, e.g.
    # 5.0) or "sapo" (soft gate with these temperatures). delta > 1 + epsilon_high caps the
    # unclipped ratio (two-sided clipping, the same as verl's dual-clip with
    # clip_ratio_c = delta); 0.0 leaves it off. configs/base.py's `gspo(c)` sets GSPO's
    # sequence-level settings. "luspo" (GSPO with each sequence's term times its length; with
    # importance_sampling_level "sequence" and loss_aggregation "grpo") and "vespo" (REINFORCE
    # weighted by the gamma kernel W^k exp(lambda (1 - W)) of the sequence's importance
    # weight W; k, lambda below for positive and negative advantages; token-level ratios) are
    # TRL's. Each term reads only its own keys, whose defaults its settings dataclass holds
    # (delta 0.0; sapo_tau_pos 1.0, sapo_tau_neg 1.05; vespo_k_pos 2.0, vespo_lambda_pos 3.0,
    # vespo_k_neg 3.0, vespo_lambda_neg 2.0), added below by `term_defaults`.
    c.loss_type = "grpo"
    # Keep only the top fraction of completion tokens by the policy's entropy in the policy
    # term (the high-entropy "forking" tokens carry the signal; 1.0 keeps all, 0.2 is the
    # paper's), and an entropy bonus weight (0: off) against entropy collapse.
    c.top_entropy_quantile = 1.0
    c.entropy_coef = 0.0
    # Adaptive entropy control (Skywork-OR1; TRL's use_adaptive_entropy): entropy_coef is then
    # the starting coefficient; after each update it rises by entropy_coef_delta while the mean
    # entropy of the sampled tokens (those kept by top_entropy_quantile) is at or below
    # entropy_target (nats) and falls by it above, within [entropy_coef_min, entropy_coef_max];
    # an update applies it only when the last measured entropy was at or below the target.
    c.use_adaptive_entropy = False
    c.entropy_target = 0.2
    c.entropy_coef_min = 0.0
    c.entropy_coef_max = 1.0
    c.entropy_coef_delta = 0.005
    # DeepSeek-V3.2's off-policy sequence masking (0: off; e.g. 0.5): drop the sequences of
    # negative advantage whose mean log pi_old - log pi_theta exceeds it. Its unbiased KL: the
    # k3 term weighted by the importance ratio (with grpo.beta > 0).
    c.off_policy_mask_threshold = 0.0
    c.use_bias_correction_kl = False
    # The sampler's compute dtype: "" is the trainer's (model.compute_dtype or model.dtype);
    # "bfloat16" rolls out the float32 master weights in bfloat16 (off_policy_mask_threshold's
    # mask then measures the drift from the sampler's log-probs). rollout_correction reweighs
    # each sampled token's policy term by pi_trainer / pi_sampler at the sampler's parameters
    # (TRL's vllm_importance_sampling_mode): "token_truncate", "token_mask",
    # "sequence_truncate" or "sequence_mask" ("" off), truncated to or masked outside
    # [rollout_correction_min, rollout_correction_max] (0: no bound on that side).
    c.rollout_dtype = ""
    c.rollout_correction = ""
    c.rollout_correction_min = 0.0
    c.rollout_correction_max = 3.0
    c.num_off_policy = 0  # mixed-policy GRPO: ground-truth answers added to each group
    # Advantages r - mean(group), not divided by the group's std ("group", the papers' setting,
    # and "batch" divide): with the tiny model's templated answers many groups differ by a few
    # hundredths of BLEU, which std-normalisation would blow up to full-size advantages.
    c.scale_rewards = "none"
    # The advantage estimator (sallm_jax/rl/advantages.py ADVANTAGE_ESTIMATORS): "grpo" (the
    # group mean, with grpo.scale_rewards's std), "rloo" (leave-one-out mean),
    # "reinforce_plus_plus" (rewards whitened over the batch) or "reinforce_plus_plus_baseline"
    # (the group mean subtracted, then whitened); all but grpo need grpo.scale_rewards = "none".
    c.advantage_estimator = "grpo"
    c.num_iterations = 1
    # One generation: steps_per_generation batches rolled out at the same parameters and
    # scored together, then one optimiser step per batch (num_iterations each); the ratio is
    # live from the generation's second update on. grpo.steps must be a multiple of it.
    c.steps_per_generation = 1
    # DAPO's dynamic sampling: each training batch is filled with groups whose rewards differ
    # (all-equal groups have zero advantages), drawing up to dynamic_sampling_max_draws batches
    # of prompts; a batch still short after them trains on the groups it has (the shortfall is
    # logged). Logs prompts_drawn and frac_reward_zero_std/drawn.
    c.dynamic_sampling = False
    c.dynamic_sampling_max_draws = 3
    c.micro_batch_size = 0  # prompts per gradient-accumulation micro-batch; 0: whole batch
    c.mask_truncated_completions = False
    c.reward_fns = ("bleu",)
    c.reward_weights = (1.0,)
    c.reward_failure_value = 0.0  # reward of a sample whose reward function raised
    # Several rewards: "sum" forms the advantages from the weighted sum; "per_reward" (GDPO)
    # normalises each reward within its group first, then the weighted sum over the batch, so
    # an easy reward (format) cannot drown a hard one (accuracy) in ties of their sum.
    c.multi_reward_normalization = "sum"
    # Stop when one reward function fails on at least this fraction of the samples for this
    # many steps in a row (a bug, not an odd completion); its first traceback is shown.
    c.reward_failure_stop_fraction = 1.0
    c.reward_failure_stop_steps = 3
    c.temperature = 1.0
    # Warn (once per stage) when the sampler's log-probs of its tokens and the trainer's at the
    # same parameters differ by more than this on average: they should agree up to numerics
    # (~1e-6 in float32, ~1e-2 in bfloat16), a larger gap means stale weights or a mismatched
    # temperature. 0 never warns.
    c.warn_logp_diff_above = 0.05
    c.top_p = 1.0
    c.top_k = 0
    # After top-k / top-p, drop tokens less likely than min_p x the most likely one (0: off);
    # before temperature, divide the positive logits of tokens already in the prompt or the
    # completion by repetition_penalty and multiply the negative ones (1: off), as transformers.
    c.min_p = 0.0
    c.repetition_penalty = 1.0
    c.max_completion_length = 16
    c.checkpoint_every = 20
    c.log_every = 5
    c.log_completions_every = 25  # steps between records of grpo/completions.jsonl
    # Score the policy on the validation split every eval_every steps (0: never) and keep the
    # best parameters, the starting ones included; select_on names the metric.
    c.eval_every = 25
    c.select_on = "bleu"
    for key, value in term_defaults().items():
        if key not in c:
            c[key] = value
    return c
