"""Granite Speech hyper-parameters (`GraniteSpeechConfig` in transformers): `encoder_config`,
`projector_config`, `text_config` of config.json, one to one; defaults are transformers 5.23's."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class GraniteEncoderConfig:
    """CTC conformer encoder (`GraniteSpeechEncoderConfig`); dim_head None: hidden_dim // num_heads.
    ValueError unless 0 < context_size <= max_pos_emb."""

    input_dim: int = 160
    num_layers: int = 10
    hidden_dim: int = 1024
    feedforward_mult: int = 4
    num_heads: int = 8
    dim_head: int | None = None
    output_dim: int = 42
    context_size: int = 200
    max_pos_emb: int = 512
    conv_kernel_size: int = 15
    conv_expansion_factor: int = 2
    # Not in config.json: torch's nn.LayerNorm and nn.BatchNorm1d defaults, which transformers uses.
    layer_norm_eps: float = 1e-5
    batch_norm_eps: float = 1e-5

    def __post_init__(self):
        if self.dim_head is None:
            object.__setattr__(self, "dim_head", self.hidden_dim // self.num_heads)
        if not 0 < self.context_size <= self.max_pos_emb:
            raise ValueError(
                f"encoder_config.context_size={self.context_size} must lie in "
                f"(0, max_pos_emb={self.max_pos_emb}]"
            )


@dataclasses.dataclass(frozen=True)
class GraniteProjectorConfig:
    """Q-Former projector (`Blip2QFormerConfig`; only the fields the query path reads)."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    layer_norm_eps: float = 1e-12
    cross_attention_frequency: int = 2
    encoder_hidden_size: int = 1408

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclasses.dataclass(frozen=True)
class GraniteTextConfig:
    """Granite decoder (`GraniteConfig`); num_key_value_heads None: num_attention_heads.
    `tie_word_embeddings` is the effective tie (5.23 ties by `GraniteSpeechConfig`'s top-level
    flag); `apply_logits_scaling` is not a transformers field (see `GraniteLM`)."""

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    embedding_multiplier: float = 1.0
    attention_multiplier: float = 1.0
    residual_multiplier: float = 1.0
    logits_scaling: float = 1.0
    apply_logits_scaling: bool = False

    def __post_init__(self):
        if self.num_key_value_heads is None:
            object.__setattr__(self, "num_key_value_heads", self.num_attention_heads)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclasses.dataclass(frozen=True)
class GraniteSpeechConfig:
    """Conformer encoder -> windowed Q-Former projector -> Granite decoder."""

    encoder: GraniteEncoderConfig = dataclasses.field(default_factory=GraniteEncoderConfig)
    projector: GraniteProjectorConfig = dataclasses.field(default_factory=GraniteProjectorConfig)
    text: GraniteTextConfig = dataclasses.field(default_factory=GraniteTextConfig)
    audio_token_id: int = 49155
    window_size: int = 15
    downsample_rate: int = 5

    @property
    def num_queries(self) -> int:
        """Learned queries per projector window (audio tokens each window yields)."""
        return self.window_size // self.downsample_rate

    @classmethod
    def from_sizes(cls, audio: Mapping[str, Any], text: Mapping[str, Any], vocab_size: int,
                   audio_token_id: int) -> GraniteSpeechConfig:
        """The model of a config's `model.audio` (optional "encoder", "projector", "window_size",
        "downsample_rate"; the projector reads the encoder's width) and `model.text` sizes."""
        audio = dict(audio)
        encoder = GraniteEncoderConfig(**audio.pop("encoder", {}))
        projector = GraniteProjectorConfig(**{"encoder_hidden_size": encoder.hidden_dim,
                                              **audio.pop("projector", {})})
        return cls(encoder=encoder, projector=projector,
                   text=GraniteTextConfig(**text, vocab_size=vocab_size),
                   audio_token_id=audio_token_id, **audio)


def granite_audio_token_count(feature_frames, window_size: int = 15, num_queries: int = 3):
    """Audio tokens for `feature_frames` valid stacked (160-dim) frames (ints or arrays):
    ceil(frames / window_size) * num_queries, as `GraniteSpeechFeatureExtractor`'s
    `_get_num_audio_features` (frames = (samples // 160 + 1) // 2)."""
    return (-(-feature_frames // window_size)) * num_queries
