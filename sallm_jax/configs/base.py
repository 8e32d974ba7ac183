"""The settings every experiment shares; each experiment file starts from `base_config()`."""

import ml_collections

from sallm_jax.parallel.sharding import DEFAULT_RULES


def sft_section(**settings) -> ml_collections.ConfigDict:
    """Settings of a supervised stage (cross-entropy on the target tokens)."""
    c = ml_collections.ConfigDict({
        "steps": 100, "batch_size": 32, "learning_rate": 2e-3, "warmup_steps": 10,
        "weight_decay": 0.01, "max_grad_norm": 1.0, "max_target_tokens": 12,
        "checkpoint_every": 50, "log_every": 25,
        # > 0 adds this times a CTC loss of the audio embeddings, read through the LM head,
        # against the target tokens (transcription targets: the base stage).
        "ctc_weight": 0.0,
        # Score on the validation split every eval_every steps (0: never) and keep the best
        # parameters, the starting ones included, as the GRPO stage does.
        "eval_every": 0,
    })
    c.update(settings)
    return c


def tiny_model() -> ml_collections.ConfigDict:
    """The sizes of the default model, a small Qwen2-Audio architecture (its vocabulary is the
    tokenizer's, `tokenizer.vocab_size`); `python -m sallm_jax.plan_memory --preset tiny`
    plans it from here too."""
    return ml_collections.ConfigDict({
        "audio": {"num_mel_bins": 80, "d_model": 128, "encoder_layers": 2,
                  "encoder_attention_heads": 4, "encoder_ffn_dim": 256,
                  "max_source_positions": 400},
        "text": {"hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "num_key_value_heads": 2, "rope_theta": 10000.0,
                 "rms_norm_eps": 1e-6, "tie_word_embeddings": True},
    })


def base_config() -> ml_collections.ConfigDict:
    """Every knob, set for the embedded spoken-QA task and the tiny model."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    # base: the pretrained base model (built on first use, cached); warmup: a short SFT on the
    # task; then the two arms from the same warm start with the same number of training
    # examples: more SFT, or GRPO; eval: every stage's parameters on eval.splits.
    c.stages = ("base", "warmup", "sft", "grpo", "eval")
    c.init_params = ""  # an Orbax params directory (<workdir>/<stage>/params) to start from

    c.data = ml_collections.ConfigDict()
    c.data.name = "embedded_sqa"  # embedded_ast, embedded_aqa, or "manifest" with paths below
    c.data.truncate_long_audio = False  # True: cut clips to the largest bucket (logged count)
    c.data.on_bad_input = "error"  # or "skip": leave bad examples out, listed in skipped.jsonl
    c.data.num_workers = 0  # > 0: decode audio in that many worker processes (else threads)
    c.data.root = ""  # embedded set folder; default <$SALLM_JAX_CACHE or ~/.cache/sallm_jax>/
    # <name>/seed<seed>-<train>-<validation>-<test>
    c.data.seed = 0
    c.data.num_train = 1200
    c.data.num_validation = 100
    c.data.num_test = 200
    c.data.train_manifest = ""
    c.data.validation_manifest = ""
    c.data.test_manifest = ""
    c.data.audio_buckets_s = (3.25, 5.0)
    c.data.max_prompt_text_tokens = 48
    # A system turn of one's own for every prompt; "" keeps the chat template's default
    # (Qwen2-Audio's "You are a helpful assistant.", Granite's turn with today's date).
    c.data.system_prompt = ""

    c.tokenizer = ml_collections.ConfigDict({"path": "", "vocab_size": 1024})
    c.model = tiny_model()
    # A Hugging Face checkpoint (Qwen2-Audio or Granite Speech) to start from instead of the
    # sizes above, with its own tokenizer, chat template and generation config: a directory,
    # or a Hub id "org/name[@revision]" read through huggingface_hub's cache.
    c.model.checkpoint = ""
    c.model.dtype = "float32"  # parameter storage: float32 or bfloat16
    # Activations and matmuls: "" computes in model.dtype; "bfloat16" with float32 storage is
    # mixed precision (float32 master weights, each cast at its use). Log-probs, losses and
    # LoRA adapters stay float32 either way.
    c.model.compute_dtype = ""
    # Decoder attention through jax.nn.dot_product_attention (cuDNN's fused kernel on a GPU
    # in bfloat16, JAX's XLA path elsewhere) instead of the project's einsum attention.
    c.model.fused_attention = False
    c.model.remat = False  # recompute decoder activations in the backward pass (saves memory)
    # Decoder and audio-encoder layers as one lax.scan over their stacked weights: one layer
    # compiled instead of every layer unrolled (minutes saved at 40 layers), the same arithmetic.
    c.model.scan_layers = False

    # LoRA: rank 0 trains every parameter. With adapters, `trainable` picks what else trains
    # ("adapters", "adapters+projector", "adapters+projector+encoder", "all"); when only the
    # adapters train, the GRPO reference is the same weights with adapters off (no copy).
    c.lora = ml_collections.ConfigDict()
    c.lora.rank = 0
    c.lora.alpha = 32.0
    c.lora.target_modules = ("q_proj", "v_proj")
    c.lora.trainable = "adapters"
    # A PEFT adapter to start from (a directory or a Hub id); one inside model.checkpoint's
    # folder is read without it (Granite Speech ships one).
    c.lora.adapter_dir = ""

    # The base model (stage "base"): the configured model trained from random initialisation
    # to transcribe the embedded ASR corpus (never the task), with a tokenizer trained on that
    # corpus; cached in $SALLM_JAX_CACHE/base/<key of these settings and the model's>.
    c.base = sft_section(steps=600, batch_size=20, learning_rate=2e-3, warmup_steps=50,
                         max_target_tokens=20, checkpoint_every=100, ctc_weight=0.3)
    c.base.num_train = 4000  # corpus clips; validation clips give the held-out WER
    c.base.num_validation = 100
    c.base.seed = 0
    # Each training stage starts from the final parameters of the stage `start` names; from the
    # initial parameters (the new model, model.checkpoint or init_params) when it is "init"; or,
    # when it is "", from the previous training stage's (the first from the initial ones).
    c.base.start = ""

    c.warmup = sft_section(steps=200, batch_size=32, learning_rate=2e-3, warmup_steps=20)
    c.warmup.start = "base"

    # The SFT arm: as many training examples as the GRPO arm's prompts (steps x batch_size).
    # The two arms' learning rates are those `sallm_jax.grpo_vs_sft` chose on the validation
    # split from {0.5, 1, 2} x (5e-4 for SFT, 4e-4 for GRPO) (README, "GRPO vs SFT").
    c.sft = sft_section(steps=100, batch_size=16, learning_rate=1e-3, warmup_steps=5)
    c.sft.start = "warmup"

    c.rl = ml_collections.ConfigDict()
    c.rl.start = "warmup"
    c.rl.steps = 100
    c.rl.batch_size = 16  # prompts per step; each gets group_size samples
    c.rl.group_size = 8
    c.rl.learning_rate = 4e-4
    c.rl.warmup_steps = 5
    c.rl.weight_decay = 0.0
    c.rl.max_grad_norm = 1.0
    c.rl.beta = 0.02
    # A reference that moves (TR-DPO, as TRL's sync_ref_model): every ref_model_sync_steps
    # optimiser updates it becomes ref_model_mixup_alpha x policy + (1 - alpha) x itself.
    # Needs beta > 0; not under LoRA, whose reference is the base with the adapters off.
    c.rl.sync_ref_model = False
    c.rl.ref_model_mixup_alpha = 0.6
    c.rl.ref_model_sync_steps = 512
    c.rl.epsilon = 0.2
    c.rl.epsilon_high = 0.2
    c.rl.loss_aggregation = "dapo"  # or grpo, dr_grpo, bnpo
    c.rl.importance_sampling_level = "token"  # or "sequence"
    # The policy term (sallm_jax/rl/grpo.py POLICY_TERMS): "grpo" (clipped surrogate), "cispo"
    # (capped, stop-gradient weight; epsilon_high is then the cap, e.g. 5.0) or "sapo" (soft
    # gate with these temperatures). delta > 1 + epsilon_high caps the unclipped ratio (two-sided
    # clipping, the same as verl's dual-clip with clip_ratio_c = delta); 0.0 leaves it off.
    # `gspo(c)` below sets GSPO's sequence-level settings. "luspo" (GSPO with each sequence's
    # term times its length; with importance_sampling_level "sequence" and loss_aggregation
    # "grpo") and "vespo" (REINFORCE weighted by the gamma kernel
    # W^k exp(lambda (1 - W)) of the sequence's importance weight W; k, lambda below for
    # positive and negative advantages; token-level ratios) are TRL's.
    c.rl.loss_type = "grpo"
    c.rl.delta = 0.0
    c.rl.sapo_tau_pos = 1.0
    c.rl.sapo_tau_neg = 1.05
    c.rl.vespo_k_pos, c.rl.vespo_lambda_pos = 2.0, 3.0
    c.rl.vespo_k_neg, c.rl.vespo_lambda_neg = 3.0, 2.0
    # Keep only the top fraction of completion tokens by the policy's entropy in the policy
    # term (the high-entropy "forking" tokens carry the signal; 1.0 keeps all, 0.2 is the
    # paper's), and an entropy bonus weight (0: off) against entropy collapse.
    c.rl.top_entropy_quantile = 1.0
    c.rl.entropy_coef = 0.0
    # Adaptive entropy control (Skywork-OR1; TRL's use_adaptive_entropy): entropy_coef is then
    # the starting coefficient; after each update it rises by entropy_coef_delta while the mean
    # entropy of the sampled tokens (those kept by top_entropy_quantile) is at or below
    # entropy_target (nats) and falls by it above, within [entropy_coef_min, entropy_coef_max];
    # an update applies it only when the last measured entropy was at or below the target.
    c.rl.use_adaptive_entropy = False
    c.rl.entropy_target = 0.2
    c.rl.entropy_coef_min = 0.0
    c.rl.entropy_coef_max = 1.0
    c.rl.entropy_coef_delta = 0.005
    # DeepSeek-V3.2's off-policy sequence masking (0: off; e.g. 0.5): drop the sequences of
    # negative advantage whose mean log pi_old - log pi_theta exceeds it. Its unbiased KL: the
    # k3 term weighted by the importance ratio (with rl.beta > 0).
    c.rl.off_policy_mask_threshold = 0.0
    c.rl.use_bias_correction_kl = False
    # The sampler's compute dtype: "" is the trainer's (model.compute_dtype or model.dtype);
    # "bfloat16" rolls out the float32 master weights in bfloat16 (off_policy_mask_threshold's
    # mask then measures the drift from the sampler's log-probs). rollout_correction reweighs
    # each sampled token's policy term by pi_trainer / pi_sampler at the sampler's parameters
    # (TRL's vllm_importance_sampling_mode): "token_truncate", "token_mask",
    # "sequence_truncate" or "sequence_mask" ("" off), truncated to or masked outside
    # [rollout_correction_min, rollout_correction_max] (0: no bound on that side).
    c.rl.rollout_dtype = ""
    c.rl.rollout_correction = ""
    c.rl.rollout_correction_min = 0.0
    c.rl.rollout_correction_max = 3.0
    c.rl.num_off_policy = 0  # mixed-policy GRPO: ground-truth answers added to each group
    # Advantages r - mean(group), not divided by the group's std ("group", the papers' setting,
    # and "batch" divide): with the tiny model's templated answers many groups differ by a few
    # hundredths of BLEU, which std-normalisation would blow up to full-size advantages.
    c.rl.scale_rewards = "none"
    # The advantage estimator (sallm_jax/rl/advantages.py ADVANTAGE_ESTIMATORS): "grpo" (the
    # group mean, with rl.scale_rewards's std), "rloo" (leave-one-out mean),
    # "reinforce_plus_plus" (rewards whitened over the batch) or "reinforce_plus_plus_baseline"
    # (the group mean subtracted, then whitened); all but grpo need rl.scale_rewards = "none".
    c.rl.advantage_estimator = "grpo"
    c.rl.num_iterations = 1
    # One generation: steps_per_generation batches rolled out at the same parameters and
    # scored together, then one optimiser step per batch (num_iterations each); the ratio is
    # live from the generation's second update on. rl.steps must be a multiple of it.
    c.rl.steps_per_generation = 1
    # DAPO's dynamic sampling: each training batch is filled with groups whose rewards differ
    # (all-equal groups have zero advantages), drawing up to dynamic_sampling_max_draws batches
    # of prompts; a batch still short after them trains on the groups it has (the shortfall is
    # logged). Logs prompts_drawn and frac_reward_zero_std/drawn.
    c.rl.dynamic_sampling = False
    c.rl.dynamic_sampling_max_draws = 3
    c.rl.micro_batch_size = 0  # prompts per gradient-accumulation micro-batch; 0: whole batch
    c.rl.mask_truncated_completions = False
    c.rl.reward_fns = ("bleu",)
    c.rl.reward_weights = (1.0,)
    c.rl.reward_failure_value = 0.0  # reward of a sample whose reward function raised
    # Several rewards: "sum" forms the advantages from the weighted sum; "per_reward" (GDPO)
    # normalises each reward within its group first, then the weighted sum over the batch, so
    # an easy reward (format) cannot drown a hard one (accuracy) in ties of their sum.
    c.rl.multi_reward_normalization = "sum"
    # Stop when one reward function fails on at least this fraction of the samples for this
    # many steps in a row (a bug, not an odd completion); its first traceback is shown.
    c.rl.reward_failure_stop_fraction = 1.0
    c.rl.reward_failure_stop_steps = 3
    c.rl.temperature = 1.0
    # Warn (once per stage) when the sampler's log-probs of its tokens and the trainer's at the
    # same parameters differ by more than this on average: they should agree up to numerics
    # (~1e-6 in float32, ~1e-2 in bfloat16), a larger gap means stale weights or a mismatched
    # temperature. 0 never warns.
    c.rl.warn_logp_diff_above = 0.05
    c.rl.top_p = 1.0
    c.rl.top_k = 0
    # After top-k / top-p, drop tokens less likely than min_p x the most likely one (0: off);
    # before temperature, divide the positive logits of tokens already in the prompt or the
    # completion by repetition_penalty and multiply the negative ones (1: off), as transformers.
    c.rl.min_p = 0.0
    c.rl.repetition_penalty = 1.0
    c.rl.max_completion_length = 16
    c.rl.checkpoint_every = 20
    c.rl.log_every = 5
    c.rl.log_completions_every = 25  # steps between records of grpo/completions.jsonl
    # Score the policy on the validation split every eval_every steps (0: never) and keep the
    # best parameters, the starting ones included; select_on names the metric.
    c.rl.eval_every = 25
    c.rl.select_on = "bleu"
    c.sft.eval_every = c.rl.eval_every  # the SFT arm's checkpoints are selected the same way

    # Training health (sallm_jax/train/health.py): a step with a non-finite loss or gradient is
    # never applied; "stop" ends the run there, "skip" moves on (at most max_nonfinite_skips in
    # a row). The warn_* bands only log; warn_spike_factor: a gradient norm or KL this many times
    # its median over the recent steps.
    c.train = ml_collections.ConfigDict({
        "on_nonfinite": "stop", "max_nonfinite_skips": 3, "warn_kl_above": 1.0,
        "warn_grad_norm_above": 1e3, "warn_zero_grad_steps": 3, "warn_spike_factor": 10.0})

    # Besides metrics.jsonl and TensorBoard: W&B (the `wandb` extra), one run per training stage
    # (<run name>/<stage>, grouped under the run name; "" names it after the workdir) receiving
    # what TensorBoard receives; wandb_entity "" is the account's default.
    c.logging = ml_collections.ConfigDict({
        "wandb": False, "wandb_project": "sallm_jax", "wandb_run_name": "", "wandb_entity": ""})

    c.parallel = ml_collections.ConfigDict()
    c.parallel.mesh = {"data": -1, "fsdp": 1, "tensor": 1}  # -1: all remaining devices
    # Logical parameter axes -> mesh axes; batches always split over data x fsdp.
    c.parallel.rules = DEFAULT_RULES
    c.parallel.coordinator_address = ""  # "host:port" to join several processes by hand
    c.parallel.num_processes = 1
    c.parallel.process_id = 0
    c.parallel.cpu_collectives = False  # gloo collectives for CPU processes
    # auto: join when SLURM / GKE describe several tasks; always: let JAX detect (TPU VM pods)
    c.parallel.initialize = "auto"

    c.eval = ml_collections.ConfigDict()
    c.eval.splits = ("test",)
    c.eval.batch_size = 50
    c.eval.max_new_tokens = 16
    # The papers' protocol for open-format answers: top-p 0.9, temperature 0.9, with
    # num_samples draws per question scored as whole evaluations (mean and std over draws).
    # temperature 0 is greedy decoding (num_samples 1). Validation scoring for model selection
    # uses the same protocol.
    c.eval.temperature = 0.9
    c.eval.top_p = 0.9
    c.eval.top_k = 0
    c.eval.num_samples = 4
    c.eval.greedy = True  # also decode greedily, reported under "<split>_greedy"

    return c


def gspo(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """GSPO (Group Sequence Policy Optimization, arXiv 2507.18071, v2 section 5.1): the clipped
    surrogate on the sequence-level (length-normalised) ratio, clip range 3e-4 / 4e-4, no KL.
    It differs from GRPO only off-policy: with rl.num_iterations > 1."""
    c.rl.loss_type, c.rl.importance_sampling_level = "grpo", "sequence"
    c.rl.epsilon, c.rl.epsilon_high, c.rl.beta = 3e-4, 4e-4, 0.0
    return c


def apply_smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A few steps of each stage on a few examples (tests, first contact)."""
    c.data.num_train, c.data.num_validation, c.data.num_test = 24, 4, 8
    c.base.num_train, c.base.num_validation = 24, 4
    for section in (c.base, c.warmup, c.sft):
        section.steps, section.batch_size, section.checkpoint_every, section.log_every = 4, 4, 2, 2
        section.warmup_steps = 1
    c.sft.eval_every = 2
    c.rl.steps, c.rl.batch_size, c.rl.group_size = 3, 2, 4
    c.rl.checkpoint_every, c.rl.log_every, c.rl.log_completions_every = 2, 1, 1
    c.rl.max_completion_length = c.eval.max_new_tokens = 8
    c.eval.batch_size = 8
    c.eval.num_samples = 2 if c.eval.temperature > 0 else 1
    return c


def granite_speech_paper(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The Granite Speech paper's comparison ("Advancing Speech Understanding in Speech-Aware
    Language Models with GRPO"), both arms: SFT and GRPO each from the checkpoint, prompts <=
    256 and answers <= 200 tokens; GRPO with G = 8, beta = 0.02, temperature 1.0 while training,
    DAPO aggregation and a BLEU reward; evaluation with top-p 0.9 / temperature 0.9; the
    decoder's and encoder's layers scanned (model.scan_layers) and the decoder's activations
    recomputed in the backward pass (model.remat). Data from
    manifests given on the command line (data.train_manifest, ...), the model from
    model.checkpoint. The SFT-only preset keeps the GRPO arm's settings (unused by its stages),
    so the two presets describe the same experiment."""
    c.data.name = "manifest"
    c.model.scan_layers = True  # 40 decoder layers, 16 conformer blocks: each compiles as one
    c.model.remat = True  # each layer's activations recomputed in the backward pass
    # SFT and GRPO each from the checkpoint, as the paper compares them.
    c.stages = ("sft", "grpo", "eval")
    c.sft.start = c.rl.start = "init"
    c.data.audio_buckets_s = (5.0, 10.0, 15.0, 20.0, 30.0)
    c.data.max_prompt_text_tokens = 256
    c.rl.group_size, c.rl.beta, c.rl.temperature = 8, 0.02, 1.0
    c.rl.scale_rewards = "group"
    c.rl.max_completion_length = c.sft.max_target_tokens = c.eval.max_new_tokens = 200
    c.rl.loss_aggregation, c.rl.reward_fns, c.rl.reward_weights = "dapo", ("bleu",), (1.0,)
    c.rl.learning_rate, c.rl.batch_size, c.rl.steps = 1e-6, 16, 2000
    c.eval.temperature, c.eval.top_p = 0.9, 0.9
    c.eval.splits = ("validation", "test")
    return c
