"""Config checks: the shipped presets pass, and each bad value names its key."""

import importlib

import pytest
from sallm_jax.configs.sqa_grpo import get_config

from sallm_jax.run.validate import validate_config


@pytest.mark.parametrize("name, preset", [
    (name, preset) for name in ("sqa_grpo", "sqa_sft", "ast_grpo", "aqa_grpo")
    for preset in ("tiny", "smoke", "paper")] + [("ast_grpo", "paper_mp")])
def test_presets_are_valid(name, preset):
    cfg = importlib.import_module(f"sallm_jax.configs.{name}").get_config(preset)
    if preset.startswith("paper"):
        cfg.data.train_manifest, cfg.data.test_manifest = "train.jsonl", "test.jsonl"
        cfg.model.checkpoint = "Qwen2-Audio-7B-Instruct"
    validate_config(cfg)


@pytest.mark.parametrize("key, value, message", [
    ("stages", ("sft", "rlhf"), "stages"),
    ("data.audio_buckets_s", (5.0, 3.0), "data.audio_buckets_s"),
    ("data.audio_buckets_s", (30.0,), "the longest clip model.audio's encoder takes"),
    ("data.num_workers", -1, "data.num_workers"),
    ("sft.steps", 0, "sft.steps"),
    ("grpo.group_size", 1, "grpo.group_size"),
    ("grpo.loss_aggregation", "mean", "grpo.loss_aggregation"),
    ("grpo.scale_rewards", "rank", "grpo.scale_rewards"),
    ("grpo.importance_sampling_level", "sentence", "grpo.importance_sampling_level"),
    ("grpo.num_off_policy", 4, "grpo.num_off_policy"),
    ("grpo.beta", -0.1, "grpo.beta"),
    ("grpo.temperature", 0.0, "grpo.temperature"),
    ("grpo.top_p", 0.0, "grpo.top_p"),
    ("grpo.reward_weights", (1.0, 2.0), "grpo.reward_weights"),
    ("grpo.reward_fns", ("blue",), "grpo.reward_fns"),
    ("eval.batch_size", 0, "eval.batch_size"),
    ("eval.num_samples", 0, "eval.num_samples"),
    ("sft.start", "grpo", "sft.start"),  # a stage that runs later
    ("grpo.start", "pretrain", "grpo.start"),
    ("warmup.learning_rate", 0.0, "warmup.learning_rate"),
    ("base.ctc_weight", -1.0, "base.ctc_weight"),
    ("base.num_train", 0, "base.num_train"),
    ("tokenizer.path", "tok/", "tokenizer.path"),  # the base brings its own
    ("model.compute_dtype", "float16", "model.compute_dtype"),
    ("grpo.learning_rate", -1.0, "grpo.learning_rate"),
    ("grpo.learning_rate", float("nan"), "grpo.learning_rate"),
    ("sft.learning_rate", float("inf"), "sft.learning_rate"),
    ("sft.max_grad_norm", 0.0, "sft.max_grad_norm"),
    ("grpo.weight_decay", -0.1, "grpo.weight_decay"),
    ("train.on_nonfinite", "ignore", "train.on_nonfinite"),
    ("grpo.dynamic_sampling_max_draws", 0, "grpo.dynamic_sampling_max_draws"),
    ("init_params", "no/such/params", "init_params: expected '' or a directory"),
])
def test_bad_values_name_their_key(key, value, message):
    cfg = get_config("smoke")
    section, _, name = key.rpartition(".")
    (cfg[section] if section else cfg)[name] = value
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        validate_config(cfg)


def test_a_tokenizer_path_must_hold_a_tokenizer(tmp_path):
    cfg = get_config("smoke")
    cfg.stages, cfg.sft.start, cfg.tokenizer.path = ("sft", "eval"), "init", str(tmp_path)
    with pytest.raises(ValueError, match=r"tokenizer\.path: expected '' or a directory holding "
                                         r"tokenizer\.json"):
        validate_config(cfg)
    (tmp_path / "tokenizer.json").write_text("{}")
    validate_config(cfg)


def test_greedy_evaluation_takes_one_draw():
    cfg = get_config("smoke")
    cfg.eval.temperature, cfg.eval.num_samples = 0.0, 3
    with pytest.raises(ValueError, match=r"eval\.num_samples.*greedy"):
        validate_config(cfg)


@pytest.mark.parametrize("settings, message", [
    ({"lora.rank": 8}, "grpo.sync_ref_model: expected False under LoRA"),
    ({"grpo.beta": 0.0}, "grpo.sync_ref_model: expected False with grpo.beta = 0"),
    ({"grpo.ref_model_mixup_alpha": 0.0}, "grpo.ref_model_mixup_alpha"),
    ({"grpo.ref_model_mixup_alpha": 1.5}, "grpo.ref_model_mixup_alpha"),
    ({"grpo.ref_model_sync_steps": 0}, "grpo.ref_model_sync_steps"),
])
def test_a_moving_reference_needs_weights_of_its_own(settings, message):
    cfg = get_config("smoke")
    cfg.grpo.sync_ref_model = True
    validate_config(cfg)
    for key, value in settings.items():
        section, name = key.split(".")
        cfg[section][name] = value
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        validate_config(cfg)


def test_a_config_with_the_old_rl_section_is_told_it_is_now_grpo():
    cfg = get_config("smoke")
    cfg.rl = cfg.grpo
    with pytest.raises(ValueError, match=r"^rl: this section is now grpo"):
        validate_config(cfg)


def test_the_sft_arm_selects_on_its_own_key():
    """sft.select_on, checked with the sft stage; the GRPO arm's key is not read for it."""
    cfg = get_config("smoke")
    cfg.stages = ("sft", "eval")
    cfg.sft.start, cfg.grpo.select_on = "init", "no_such_metric"
    validate_config(cfg)
    cfg.sft.select_on = "wer"  # lower is better
    with pytest.raises(ValueError, match=r"sft\.select_on: expected a metric where higher"):
        validate_config(cfg)
