"""Speech translation English -> German: base model -> SFT warm start -> (more SFT | GRPO with a
BLEU reward) -> test evaluation (BLEU against the German reference).

Presets: tiny (default, the embedded En->De set), smoke, paper (CoVoST2 En->De manifests from
`python -m sallm_jax.data.importers.covost2` and model.checkpoint, the paper's GRPO settings),
paper_mp (the same with mixed-policy GRPO: one ground-truth translation in each group of 8).
"""

import ml_collections
from sallm_jax.configs.base import apply_smoke, base_config, granite_speech_paper


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    c = base_config()
    c.data.name = "embedded_ast"
    # German targets run to ~17 tokens with the end token; the instruction is short.
    c.warmup.max_target_tokens = c.sft.max_target_tokens = 24
    c.grpo.max_completion_length = c.eval.max_new_tokens = 24
    if preset == "smoke":
        apply_smoke(c)
    elif preset in ("paper", "paper_mp"):
        granite_speech_paper(c)
        c.grpo.num_off_policy = 1 if preset == "paper_mp" else 0
    elif preset != "tiny":
        raise ValueError(f"configs/ast_grpo.py: unknown preset {preset!r}; expected tiny, smoke, "
                         f"paper or paper_mp")
    return c
