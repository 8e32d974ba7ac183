"""Spoken question answering with supervised fine-tuning only (the baseline GRPO is compared
with): base model -> SFT warm start -> more SFT -> evaluation.

Presets: tiny (default, embedded spoken-QA set), smoke, paper (LibriSQA manifests and
model.checkpoint; the SFT settings of the Granite Speech paper's baseline).
"""

import ml_collections
from sallm_jax.configs.base import apply_smoke, base_config, granite_speech_paper


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    c = base_config()
    c.stages = ("base", "warmup", "sft", "eval")
    if preset == "smoke":
        apply_smoke(c)
    elif preset == "paper":
        granite_speech_paper(c)
        c.stages = ("sft", "eval")
        c.sft.learning_rate, c.sft.batch_size, c.sft.steps = 1e-5, 16, 2000
    elif preset != "tiny":
        raise ValueError(f"configs/sqa_sft.py: unknown preset {preset!r}; expected tiny, smoke "
                         f"or paper")
    return c
