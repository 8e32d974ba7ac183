"""Multiple-choice audio question answering in R1-AQA's format: base model -> SFT warm start ->
(more SFT | GRPO with the accuracy + format rewards) -> accuracy by the MMAU rule.

Presets: tiny (default, the embedded multiple-choice set), smoke, paper (AVQA training manifests
from `python -m sallm_jax.data.importers.avqa`, MMAU test-mini from `...importers.mmau` as the
test split, Qwen2-Audio-7B-Instruct as model.checkpoint; the settings of R1-AQA, "Reinforcement
Learning Outperforms Supervised Fine-Tuning: A Case Study on Audio Question Answering").
"""

import ml_collections
from sallm_jax.configs.base import apply_smoke, base_config


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    c = base_config()
    c.data.name = "embedded_aqa"
    # Question + four choices + the answer instruction: up to 75 text tokens with the base
    # tokenizer over the embedded splits.
    c.data.max_prompt_text_tokens = 80
    c.warmup.max_target_tokens = c.sft.max_target_tokens = 16
    c.grpo.max_completion_length = c.eval.max_new_tokens = 16
    c.grpo.reward_fns, c.grpo.reward_weights = ("accuracy", "format"), (1.0, 1.0)
    c.grpo.beta = 0.04
    # Each stage on the task keeps its best parameters on validation by accuracy.
    c.warmup.select_on = c.sft.select_on = c.grpo.select_on = "accuracy"
    # One answer per question, decoded greedily: the open-format tasks' sampled protocol does
    # not apply to a choice between four options.
    c.eval.temperature, c.eval.num_samples = 0.0, 1
    if preset == "smoke":
        apply_smoke(c)
    elif preset == "paper":
        c.data.name = "manifest"
        c.data.audio_buckets_s = (10.0, 20.0, 30.0)
        c.data.max_prompt_text_tokens = 512
        c.grpo.max_completion_length = c.eval.max_new_tokens = 256
        c.grpo.group_size, c.grpo.temperature, c.grpo.learning_rate = 8, 1.0, 1e-6
        c.grpo.scale_rewards = "group"
        c.grpo.steps, c.grpo.batch_size = 1000, 16
        c.stages = ("grpo", "eval")  # R1-AQA starts GRPO from the instruct model, no SFT
        c.grpo.start = "init"
    elif preset != "tiny":
        raise ValueError(f"configs/aqa_grpo.py: unknown preset {preset!r}; expected tiny, smoke "
                         f"or paper")
    return c
