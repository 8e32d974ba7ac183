"""The Granite Speech family: `GraniteSpeechLM` and its Hub reader and writer, registered by
model_type."""

from __future__ import annotations

import numpy as np

from sallm_jax.audio.granite_features import granite_feature_frames
from sallm_jax.models.families import ModelFamily, register_family
from sallm_jax.models.granite_speech.config import GraniteSpeechConfig, granite_audio_token_count
from sallm_jax.models.granite_speech.hub import (
    granite_param_map,
    granite_speech_config_from_hf,
    granite_speech_config_to_hf,
    load_granite_state_dict,
)
from sallm_jax.models.granite_speech.model import GraniteSpeechLM

# The encoder accepts any length; 150 stacked frames (3 s) cover 10 projector windows.
_REFERENCE_FRAMES = 150
AUDIO_TOKEN = "<|audio|>"  # GraniteSpeechProcessor's placeholder


def reference_audio_inputs(features: np.ndarray, lengths: np.ndarray,
                           audio_tokens: np.ndarray) -> dict[str, np.ndarray]:
    """transformers' audio inputs: features [B, frames, 160] and the mask of valid audio tokens."""
    del lengths  # the encoder has no padding mask
    return {
        "input_features": features,
        "input_features_mask": np.arange(audio_tokens.max())[None, :] < audio_tokens[:, None],
    }


def tiny_sizes() -> dict:
    """A small Granite Speech architecture: 2 conformer blocks of width 64, a 1-layer Q-Former
    of width 64, 2 decoder layers of width 128."""
    return {"audio": {"encoder": {"num_layers": 2, "hidden_dim": 64, "num_heads": 4,
                                  "feedforward_mult": 2, "context_size": 200,
                                  "conv_kernel_size": 15, "output_dim": 42},
                      "projector": {"hidden_size": 64, "num_hidden_layers": 1,
                                    "num_attention_heads": 4, "intermediate_size": 128},
                      "window_size": 15, "downsample_rate": 5},
            "text": {"hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 2, "rope_theta": 10000.0,
                     "rms_norm_eps": 1e-6, "tie_word_embeddings": True}}


def user_content(text: str) -> str:
    """The user turn as Granite Speech's model card writes it: the placeholder, then the text
    (the chat template takes a plain string)."""
    return AUDIO_TOKEN + text


GRANITE_SPEECH = register_family(ModelFamily(
    model_type="granite_speech",
    architecture="GraniteSpeechForConditionalGeneration",
    config_class=GraniteSpeechConfig,
    model_class=GraniteSpeechLM,
    from_sizes=GraniteSpeechConfig.from_sizes,
    tiny_sizes=tiny_sizes,
    config_from_hf=granite_speech_config_from_hf,
    config_to_hf=granite_speech_config_to_hf,
    param_map=granite_param_map,
    load_state_dict=load_granite_state_dict,
    feature_frames=granite_feature_frames,
    audio_tokens=lambda config, frames: granite_audio_token_count(
        frames, config.window_size, config.num_queries),
    input_width=lambda config: config.encoder.input_dim,
    frames_per_input=2,
    encoder="encoder",
    projector="projector",
    audio_token=AUDIO_TOKEN,
    user_content=user_content,
    reference_frames=lambda config: _REFERENCE_FRAMES,
    reference_audio_inputs=reference_audio_inputs,
))
