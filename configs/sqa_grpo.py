"""Spoken question answering, the papers' comparison in miniature: base model -> SFT warm start
-> (more SFT | GRPO with a BLEU reward), the same training examples for each arm -> evaluation.

Presets (`--config=configs/sqa_grpo.py:PRESET`):
  tiny (default)  a small Qwen2-Audio-architecture model: a base trained from scratch to
                  transcribe the embedded ASR corpus (cached), then the embedded spoken-QA set;
                  finishes on a 2-core CPU in minutes.
  smoke           the same, a few steps of each stage (tests).
  paper           LibriSQA manifests (data.*_manifest) and a checkpoint (model.checkpoint)
                  with the Granite Speech paper's settings; SFT and GRPO each from the
                  checkpoint.
"""

import ml_collections
from sallm_jax.configs.base import apply_smoke, base_config, granite_speech_paper


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    c = base_config()
    if preset == "smoke":
        apply_smoke(c)
    elif preset == "paper":
        granite_speech_paper(c)
    elif preset != "tiny":
        raise ValueError(f"configs/sqa_grpo.py: unknown preset {preset!r}; expected tiny, smoke "
                         f"or paper")
    return c
