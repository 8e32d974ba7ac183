"""The settings every experiment shares; each experiment file starts from `base_config()`."""

import ml_collections

from sallm_jax.models.families import families
from sallm_jax.parallel.sharding import DEFAULT_RULES
from sallm_jax.stages import stage_sections


def tiny_model(family: str = "qwen2_audio") -> ml_collections.ConfigDict:
    """`model.family` and the family's default new model (`tiny_sizes`; vocabulary:
    tokenizer.vocab_size). `sallm-jax plan-memory --preset tiny` plans the default one."""
    return ml_collections.ConfigDict({"family": family, **families()[family].tiny_sizes()})


def use_family(c: ml_collections.ConfigDict, family: str) -> ml_collections.ConfigDict:
    """A new model of `family` at its default sizes (`tiny_model`), in place of the configured
    family and sizes: `use_family(get_config("tiny"), "granite_speech")`."""
    for key, value in tiny_model(family).items():
        c.model[key] = value
    return c


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
    # A new model: model.family ("qwen2_audio" or "granite_speech") at the sizes model.audio /
    # model.text give, in that family's form (`tiny_model`).
    c.model = tiny_model()
    # A Hugging Face checkpoint (Qwen2-Audio or Granite Speech) to start from instead of the
    # family and sizes above, with its own tokenizer, chat template and generation config: a
    # directory, or a Hub id "org/name[@revision]" read through huggingface_hub's cache.
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

    # Each stage's section, named after it, with the defaults its registration carries
    # (sallm_jax/stages/): base, warmup, sft, grpo (the GRPO settings: stages/grpo_section.py)
    # and eval.
    for name, section in stage_sections().items():
        c[name] = section

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

    return c


def gspo(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """GSPO (Group Sequence Policy Optimization, arXiv 2507.18071, v2 section 5.1): the clipped
    surrogate on the sequence-level (length-normalised) ratio, clip range 3e-4 / 4e-4, no KL.
    It differs from GRPO only off-policy: with grpo.num_iterations > 1."""
    c.grpo.loss_type, c.grpo.importance_sampling_level = "grpo", "sequence"
    c.grpo.epsilon, c.grpo.epsilon_high, c.grpo.beta = 3e-4, 4e-4, 0.0
    return c


def apply_smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A few steps of each stage on a few examples (tests, first contact)."""
    c.data.num_train, c.data.num_validation, c.data.num_test = 24, 4, 8
    c.base.num_train, c.base.num_validation = 24, 4
    for section in (c.base, c.warmup, c.sft):
        section.steps, section.batch_size, section.checkpoint_every, section.log_every = 4, 4, 2, 2
        section.warmup_steps = 1
    c.sft.eval_every = 2
    c.grpo.steps, c.grpo.batch_size, c.grpo.group_size = 3, 2, 4
    c.grpo.checkpoint_every, c.grpo.log_every, c.grpo.log_completions_every = 2, 1, 1
    c.grpo.max_completion_length = c.eval.max_new_tokens = 8
    c.eval.batch_size = 8
    c.eval.num_samples = 2 if c.eval.temperature > 0 else 1
    return c


def granite_speech_paper(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The Granite Speech paper's comparison ("Advancing Speech Understanding in Speech-Aware
    Language Models with GRPO"), both arms, each from model.checkpoint, on manifests given on
    the command line (data.train_manifest, ...). The SFT-only preset keeps the GRPO arm's
    settings too, so the two presets describe the same experiment."""
    c.data.name = "manifest"
    c.model.scan_layers = True  # 40 decoder layers, 16 conformer blocks: each compiles as one
    c.model.remat = True  # each layer's activations recomputed in the backward pass
    # SFT and GRPO each from the checkpoint, as the paper compares them.
    c.stages = ("sft", "grpo", "eval")
    c.sft.start = c.grpo.start = "init"
    c.data.audio_buckets_s = (5.0, 10.0, 15.0, 20.0, 30.0)
    c.data.max_prompt_text_tokens = 256
    c.grpo.group_size, c.grpo.beta, c.grpo.temperature = 8, 0.02, 1.0
    c.grpo.scale_rewards = "group"
    c.grpo.max_completion_length = c.sft.max_target_tokens = c.eval.max_new_tokens = 200
    c.grpo.loss_aggregation, c.grpo.reward_fns, c.grpo.reward_weights = "dapo", ("bleu",), (1.0,)
    c.grpo.learning_rate, c.grpo.batch_size, c.grpo.steps = 1e-6, 16, 2000
    c.eval.temperature, c.eval.top_p = 0.9, 0.9
    c.eval.splits = ("validation", "test")
    return c
