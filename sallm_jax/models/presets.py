"""Architectures of the published checkpoints this project trains, by name (config.json values).

Parameter counts (`abstract.count_params`, equal to transformers' `sum(p.numel())`):

    preset              total          encoder   projector  language model  LoRA r=64 (q, v)
    qwen2_audio_7b      8,397,094,912  637.0 M     5.2 M      7,754.9 M       33.6 M
    granite_speech_2b   3,009,408,348  440.2 M    35.7 M      2,533.5 M       17.0 M
    granite_speech_8b   8,648,834,396  440.2 M    37.8 M      8,170.9 M       34.1 M
"""

from __future__ import annotations

from sallm_jax.models.granite_speech.config import (
    GraniteEncoderConfig,
    GraniteProjectorConfig,
    GraniteSpeechConfig,
    GraniteTextConfig,
)
from sallm_jax.models.qwen2_audio.config import AudioEncoderConfig, Qwen2AudioConfig
from sallm_jax.models.qwen2_config import TextConfig

ModelConfig = Qwen2AudioConfig | GraniteSpeechConfig


def _granite_speech(text: GraniteTextConfig) -> GraniteSpeechConfig:
    # The 2B and 8B checkpoints share the encoder and the 2-layer Q-Former. The encoder is the
    # one the Hub serves now (revision 3.3.2: 16 conformer blocks, 348 CTC outputs); the first
    # 3.3 release had 10 blocks and 42 outputs (character CTC), about 160 M parameters fewer.
    return GraniteSpeechConfig(
        encoder=GraniteEncoderConfig(
            num_layers=16,
            hidden_dim=1024,
            num_heads=8,
            dim_head=128,
            output_dim=348,
            context_size=200,
            max_pos_emb=512,
        ),
        projector=GraniteProjectorConfig(
            hidden_size=1024,
            num_hidden_layers=2,
            num_attention_heads=16,
            intermediate_size=4096,
            cross_attention_frequency=1,
            encoder_hidden_size=1024,
        ),
        text=text,
        audio_token_id=49155,
    )


def _granite_33_text(hidden_size: int, intermediate_size: int, attention_multiplier: float,
                     logits_scaling: float) -> GraniteTextConfig:
    """A granite-3.3 instruct decoder: 40 layers, 32 query / 8 KV heads, tied, mu-P multipliers."""
    return GraniteTextConfig(
        vocab_size=49160,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=40,
        num_attention_heads=32,
        num_key_value_heads=8,
        rope_theta=10_000_000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        embedding_multiplier=12.0,
        attention_multiplier=attention_multiplier,
        residual_multiplier=0.22,
        logits_scaling=logits_scaling,
    )


PRESETS: dict[str, ModelConfig] = {
    # Qwen2-Audio-7B-Instruct: Whisper-large-v3-sized encoder, Qwen2-7B decoder with an extended
    # vocabulary and an untied lm_head.
    "qwen2_audio_7b": Qwen2AudioConfig(
        audio=AudioEncoderConfig(
            num_mel_bins=128,
            d_model=1280,
            encoder_layers=32,
            encoder_attention_heads=20,
            encoder_ffn_dim=5120,
            max_source_positions=1500,
        ),
        text=TextConfig(
            vocab_size=156032,
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            rope_theta=10000.0,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
        ),
        audio_token_id=151646,
    ),
    # granite-3.3-2b-instruct and -8b-instruct decoders.
    "granite_speech_2b": _granite_speech(_granite_33_text(2048, 8192, 0.015625, 8.0)),
    "granite_speech_8b": _granite_speech(_granite_33_text(4096, 12800, 0.0078125, 16.0)),
}


def get_preset(name: str) -> ModelConfig:
    """The config called `name`; the error lists the known names."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name]
