"""Random Qwen2-Audio checkpoints written by transformers, for both sides of a comparison.

Sizes: "tiny" is configs/sqa_grpo.py's tiny model (untied, vocab 1024); "100m" is ~100M
parameters (text 768 x 12 layers, 12 heads over 4 KV heads, vocab 8192 untied; audio 384 x 4).
`max_source_positions` is 150 so that a 3 s clip is exactly the encoder's input length: both
sides then encode the same 300 frames (transformers accepts no other length), and the timing
compares the engines, not 30 s of padding.
"""

from __future__ import annotations

import os

import torch
import transformers

CLIP_SECONDS = 3
MAX_SOURCE_POSITIONS = 50 * CLIP_SECONDS  # 2 x this = 300 mel frames = 3 s

SIZES: dict[str, dict] = {
    "tiny": dict(
        audio=dict(num_mel_bins=80, d_model=128, encoder_layers=2, encoder_attention_heads=4,
                   encoder_ffn_dim=256),
        text=dict(hidden_size=128, intermediate_size=384, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, vocab_size=1024),
    ),
    "100m": dict(
        audio=dict(num_mel_bins=128, d_model=384, encoder_layers=4, encoder_attention_heads=6,
                   encoder_ffn_dim=1536),
        text=dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                  num_attention_heads=12, num_key_value_heads=4, vocab_size=8192),
    ),
}


def hf_config(size: str, vocab_size: int | None = None) -> transformers.Qwen2AudioConfig:
    """transformers config of `size` (its vocabulary, or `vocab_size` ids); the audio
    placeholder is the last vocabulary id."""
    spec = SIZES[size]
    text = {**spec["text"], **({"vocab_size": vocab_size} if vocab_size else {})}
    return transformers.Qwen2AudioConfig(
        audio_config=dict(model_type="qwen2_audio_encoder",
                          max_source_positions=MAX_SOURCE_POSITIONS, **spec["audio"]),
        text_config=dict(model_type="qwen2", rms_norm_eps=1e-6, tie_word_embeddings=False,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                         **text),
        audio_token_index=text["vocab_size"] - 1,
    )


def save_random_checkpoint(size: str, path: str | os.PathLike, seed: int = 0,
                           vocab_size: int | None = None
                           ) -> transformers.Qwen2AudioForConditionalGeneration:
    """Writes a `size` model (`vocab_size` overrides its vocabulary) with N(0, 0.1) weights
    (norm scales 1 + N(0, 0.1)) via `save_pretrained` and returns it in eval mode.

    std 0.1 rather than the 0.02 init gives logits of order one, so greedy argmaxes are not
    near-ties that float rounding order could flip between the two implementations.
    """
    torch.manual_seed(seed)
    model = transformers.Qwen2AudioForConditionalGeneration(
        hf_config(size, vocab_size)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.copy_(1.0 + 0.1 * torch.randn_like(param))
            else:
                param.copy_(0.1 * torch.randn_like(param))
    model.save_pretrained(path)
    return model
