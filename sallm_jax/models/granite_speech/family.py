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


def user_content(text: str) -> str:
    """The user turn as Granite Speech's model card writes it: the placeholder, then the text
    (the chat template takes a plain string)."""
    return AUDIO_TOKEN + text


GRANITE_SPEECH = register_family(ModelFamily(
    model_type="granite_speech",
    architecture="GraniteSpeechForConditionalGeneration",
    config_class=GraniteSpeechConfig,
    model_class=GraniteSpeechLM,
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
