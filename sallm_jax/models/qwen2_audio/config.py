"""Qwen2-Audio hyper-parameters, in `Qwen2AudioConfig`'s config.json names."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from sallm_jax.models.qwen2_config import TextConfig


@dataclasses.dataclass(frozen=True)
class AudioEncoderConfig:
    """Whisper-style audio encoder (`Qwen2AudioEncoderConfig`)."""

    num_mel_bins: int = 128
    d_model: int = 1280
    encoder_layers: int = 32
    encoder_attention_heads: int = 20
    encoder_ffn_dim: int = 5120
    max_source_positions: int = 1500
    layer_norm_eps: float = 1e-5

    @property
    def max_mel_frames(self) -> int:
        """Longest log-mel input the positional table covers (2 x max_source_positions)."""
        return 2 * self.max_source_positions


@dataclasses.dataclass(frozen=True)
class Qwen2AudioConfig:
    """Audio encoder -> average pooling -> linear projector -> Qwen2 decoder."""

    audio: AudioEncoderConfig = dataclasses.field(default_factory=AudioEncoderConfig)
    text: TextConfig = dataclasses.field(default_factory=TextConfig)
    audio_token_id: int = 151646

    @classmethod
    def from_sizes(cls, audio: Mapping[str, Any], text: Mapping[str, Any], vocab_size: int,
                   audio_token_id: int) -> Qwen2AudioConfig:
        """The model of a config's `model.audio` and `model.text` sizes, with a vocabulary."""
        return cls(audio=AudioEncoderConfig(**audio),
                   text=TextConfig(**text, vocab_size=vocab_size), audio_token_id=audio_token_id)


def audio_token_count(mel_frames):
    """Audio tokens for `mel_frames` valid log-mel frames (ints or arrays), 750 for 3000 (30 s):
    conv2 (stride 2) gives L1 = (L - 1) // 2 + 1, AvgPool1d(2, 2) then (L1 - 2) // 2 + 1."""
    conv_frames = (mel_frames - 1) // 2 + 1
    return (conv_frames - 2) // 2 + 1
