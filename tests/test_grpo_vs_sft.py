"""The comparison's arms: every arm starts from the same parameters and spends the same budget
of training examples; each run is the arm's stage alone, from the start run's files."""

import pytest
from sallm_jax.configs.sqa_grpo import get_config

from sallm_jax.commands.grpo_vs_sft import arm_config, summarise
from sallm_jax.run.validate import validate_config
from sallm_jax.train.base import base_directory, default_cache_dir


@pytest.mark.parametrize("arm", ["sft", "grpo", "mp_grpo", "grpo_base"])
def test_arms_share_start_and_budget(arm, tmp_path, monkeypatch):
    base = get_config("tiny")
    # What an arm reads exists by the time it runs: the start run's and the base's files.
    monkeypatch.setenv("SALLM_JAX_CACHE", str(tmp_path / "cache"))
    start = tmp_path / "start"
    (start / "warmup" / "params").mkdir(parents=True)
    base_dir = base_directory(base, default_cache_dir())
    (base_dir / "params").mkdir(parents=True)
    (base_dir / "tokenizer").mkdir()
    (base_dir / "tokenizer" / "tokenizer.json").write_text("{}")
    cfg = arm_config(base, arm, seed=2, learning_rate=3e-4, start_dir=start)
    validate_config(cfg)
    stage, section = ("sft", cfg.sft) if arm == "sft" else ("grpo", cfg.grpo)
    assert cfg.stages == (stage, "eval") and cfg.seed == 2
    assert section.learning_rate == 3e-4 and section.start == ""
    assert cfg.tokenizer.path.endswith("/tokenizer")
    warm = base.warmup.steps * base.warmup.batch_size
    arm_examples = base.sft.steps * base.sft.batch_size
    assert arm_examples == base.grpo.steps * base.grpo.batch_size  # the same budget per arm
    examples = section.steps * section.batch_size
    if arm == "grpo_base":
        assert cfg.init_params.endswith("/params") and "/base/" in cfg.init_params
        assert examples == warm + arm_examples  # the warm start's examples as prompts too
    else:
        assert cfg.init_params == str(start / "warmup" / "params")
        assert examples == arm_examples
    assert cfg.grpo.num_off_policy == (1 if arm == "mp_grpo" else 0)


def test_summary_is_mean_and_population_std_per_evaluation():
    runs = [{"test": {"bleu": 10.0, "chrf": 1.0}, "test_greedy": {"bleu": 5.0, "chrf": 2.0}},
            {"test": {"bleu": 14.0, "chrf": 3.0}, "test_greedy": {"bleu": 7.0, "chrf": 2.0}}]
    table, summary = summarise({"+ GRPO": runs})
    assert summary["+ GRPO"]["test"]["bleu"] == {"mean": 12.0, "std": 2.0}
    assert summary["+ GRPO"]["test_greedy"]["chrf"] == {"mean": 2.0, "std": 0.0}
    assert "| + GRPO | test | 2 | 12.00 ± 2.00 | 2.00 ± 1.00 |" in table
