"""Qwen2 decoder hyper-parameters (`Qwen2Config`), named as config.json's `text_config`."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """Qwen2 decoder (`Qwen2Config`)."""

    vocab_size: int = 156032
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads
