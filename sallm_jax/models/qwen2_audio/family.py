"""The Qwen2-Audio family: `Qwen2AudioLM`, its Hub reader and writer, registered by model_type."""

from __future__ import annotations

import numpy as np

from sallm_jax.audio.log_mel import HOP_LENGTH, SAMPLE_RATE, num_feature_frames
from sallm_jax.models.families import ModelFamily, register_family
from sallm_jax.models.qwen2_audio.config import Qwen2AudioConfig, audio_token_count
from sallm_jax.models.qwen2_audio.hub import (
    hf_param_map,
    load_hf_state_dict,
    speech_lm_config_from_hf,
    speech_lm_config_to_hf,
)
from sallm_jax.models.qwen2_audio.model import Qwen2AudioLM


def reference_audio_inputs(features: np.ndarray, lengths: np.ndarray,
                           audio_tokens: np.ndarray) -> dict[str, np.ndarray]:
    """transformers' audio inputs: features [B, mel bins, frames] and their frame mask."""
    del audio_tokens  # the processor's placeholders carry the count
    feature_mask = np.arange(features.shape[1])[None, :] < lengths[:, None]
    return {
        "input_features": features.transpose(0, 2, 1).copy(),
        "feature_attention_mask": feature_mask.astype(np.int64),
    }


def tiny_sizes() -> dict:
    """A small Qwen2-Audio architecture: 2 Whisper blocks of width 128, 2 decoder layers of 128."""
    return {"audio": {"num_mel_bins": 80, "d_model": 128, "encoder_layers": 2,
                      "encoder_attention_heads": 4, "encoder_ffn_dim": 256,
                      "max_source_positions": 400},
            "text": {"hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 2, "rope_theta": 10000.0,
                     "rms_norm_eps": 1e-6, "tie_word_embeddings": True}}


def user_content(text: str) -> list[dict]:
    """The user turn as Qwen2-Audio's chat template takes it: an audio part (the template tests
    for an "audio" key and writes `Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>`; the clip
    itself travels apart from the text), then the text part."""
    return [{"type": "audio", "audio": None}, {"type": "text", "text": text}]


QWEN2_AUDIO = register_family(ModelFamily(
    model_type="qwen2_audio",
    architecture="Qwen2AudioForConditionalGeneration",
    config_class=Qwen2AudioConfig,
    model_class=Qwen2AudioLM,
    from_sizes=Qwen2AudioConfig.from_sizes,
    tiny_sizes=tiny_sizes,
    config_from_hf=speech_lm_config_from_hf,
    config_to_hf=speech_lm_config_to_hf,
    param_map=hf_param_map,
    load_state_dict=load_hf_state_dict,
    feature_frames=num_feature_frames,
    audio_tokens=lambda config, frames: audio_token_count(frames),
    input_width=lambda config: config.audio.num_mel_bins,
    frames_per_input=1,
    encoder="audio_tower",
    projector="multi_modal_projector",
    audio_token="<|AUDIO|>",
    user_content=user_content,
    # transformers' Whisper encoder insists on exactly 2 x max_source_positions frames.
    reference_frames=lambda config: config.audio.max_mel_frames,
    reference_audio_inputs=reference_audio_inputs,
    max_audio_seconds=lambda config: config.audio.max_mel_frames * HOP_LENGTH / SAMPLE_RATE,
    own_head=("language_model.lm_head.weight", "language_model.model.embed_tokens.weight"),
))
