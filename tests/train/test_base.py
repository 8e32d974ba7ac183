"""The base model's cache key: every setting that decides the base changes it, bookkeeping
does not."""

import pathlib

from configs.sqa_grpo import get_config
from sallm_jax.train.base import base_directory

CACHE = pathlib.Path("/cache")


def test_deciding_settings_change_the_key():
    reference = base_directory(get_config("tiny"), CACHE)
    assert reference.parent == CACHE / "base"
    changes = {
        "model.text.hidden_size": 96, "model.audio.encoder_layers": 3, "model.dtype": "bfloat16",
        "tokenizer.vocab_size": 512, "base.steps": 601, "base.learning_rate": 1e-3,
        "base.num_train": 3999, "base.seed": 1, "base.ctc_weight": 0.0,
        "base.max_target_tokens": 30,
    }
    keys = set()
    for path, value in changes.items():
        cfg = get_config("tiny")
        section, _, name = path.rpartition(".")
        node = cfg
        for part in section.split("."):
            node = node[part]
        node[name] = value
        keys.add(base_directory(cfg, CACHE))
    assert reference not in keys and len(keys) == len(changes)


def test_bookkeeping_and_task_settings_keep_the_key():
    reference = base_directory(get_config("tiny"), CACHE)
    cfg = get_config("tiny")
    cfg.base.log_every, cfg.base.checkpoint_every = 7, 33
    cfg.seed, cfg.rl.learning_rate, cfg.sft.steps = 5, 1e-5, 3  # the arms, not the base
    cfg.data.name = "embedded_ast"
    assert base_directory(cfg, CACHE) == reference
