"""Config checks: the shipped presets pass, and each bad value names its key."""

import importlib

import pytest

from sallm_jax.configs.sqa_grpo import get_config
from sallm_jax.validate import validate_config


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
    ("data.audio_buckets_s", (30.0,), "max_source_positions"),
    ("data.num_workers", -1, "data.num_workers"),
    ("sft.steps", 0, "sft.steps"),
    ("rl.group_size", 1, "rl.group_size"),
    ("rl.loss_aggregation", "mean", "rl.loss_aggregation"),
    ("rl.scale_rewards", "rank", "rl.scale_rewards"),
    ("rl.importance_sampling_level", "sentence", "rl.importance_sampling_level"),
    ("rl.num_off_policy", 4, "rl.num_off_policy"),
    ("rl.beta", -0.1, "rl.beta"),
    ("rl.temperature", 0.0, "rl.temperature"),
    ("rl.top_p", 0.0, "rl.top_p"),
    ("rl.reward_weights", (1.0, 2.0), "rl.reward_weights"),
    ("rl.reward_fns", ("blue",), "rl.reward_fns"),
    ("eval.batch_size", 0, "eval.batch_size"),
    ("eval.num_samples", 0, "eval.num_samples"),
    ("sft.start", "grpo", "sft.start"),  # a stage that runs later
    ("rl.start", "pretrain", "rl.start"),
    ("warmup.learning_rate", 0.0, "warmup.learning_rate"),
    ("base.ctc_weight", -1.0, "base.ctc_weight"),
    ("base.num_train", 0, "base.num_train"),
    ("tokenizer.path", "tok/", "tokenizer.path"),  # the base brings its own
    ("model.compute_dtype", "float16", "model.compute_dtype"),
    ("rl.learning_rate", -1.0, "rl.learning_rate"),
    ("rl.learning_rate", float("nan"), "rl.learning_rate"),
    ("sft.learning_rate", float("inf"), "sft.learning_rate"),
    ("sft.max_grad_norm", 0.0, "sft.max_grad_norm"),
    ("rl.weight_decay", -0.1, "rl.weight_decay"),
    ("train.on_nonfinite", "ignore", "train.on_nonfinite"),
    ("rl.dynamic_sampling_max_draws", 0, "rl.dynamic_sampling_max_draws"),
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
    ({"lora.rank": 8}, "rl.sync_ref_model: expected False under LoRA"),
    ({"rl.beta": 0.0}, "rl.sync_ref_model: expected False with rl.beta = 0"),
    ({"rl.ref_model_mixup_alpha": 0.0}, "rl.ref_model_mixup_alpha"),
    ({"rl.ref_model_mixup_alpha": 1.5}, "rl.ref_model_mixup_alpha"),
    ({"rl.ref_model_sync_steps": 0}, "rl.ref_model_sync_steps"),
])
def test_a_moving_reference_needs_weights_of_its_own(settings, message):
    cfg = get_config("smoke")
    cfg.rl.sync_ref_model = True
    validate_config(cfg)
    for key, value in settings.items():
        section, name = key.split(".")
        cfg[section][name] = value
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        validate_config(cfg)
