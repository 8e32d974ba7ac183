"""Qwen2-Audio checkpoints (config.json + safetensors) -> `Qwen2AudioLM`; its config.json writer.

Hub keys as transformers 5.23's `save_pretrained` writes them (5.x `state_dict()` keys renamed by
`param_table.hub_key`). The head is a tensor of its own: `Qwen2AudioForConditionalGeneration` ties
no weights, whatever `tie_word_embeddings` says.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping

import numpy as np

from sallm_jax.models.hub.assign import assign_tensors
from sallm_jax.models.hub.hf_config import hf_rope
from sallm_jax.models.hub.param_table import ParamTable, Transform, hub_key
from sallm_jax.models.paths import ParamPath
from sallm_jax.models.qwen2_audio.config import AudioEncoderConfig, Qwen2AudioConfig
from sallm_jax.models.qwen2_audio.model import Qwen2AudioLM
from sallm_jax.models.qwen2_config import TextConfig

# Defaults of transformers' Qwen2Config / Qwen2AudioEncoderConfig / Qwen2AudioConfig, used for
# fields a config.json leaves out (save_pretrained in 5.x writes them all; older files may not).
_HF_TEXT_DEFAULTS = dict(
    vocab_size=151936,
    hidden_size=4096,
    intermediate_size=22016,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=None,
    rope_theta=10000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)
_HF_AUDIO_DEFAULTS = dict(
    num_mel_bins=128,
    d_model=1280,
    encoder_layers=32,
    encoder_attention_heads=20,
    encoder_ffn_dim=5120,
    max_source_positions=1500,
)
_HF_AUDIO_TOKEN_ID = 151646


def speech_lm_config_from_hf(hf_config: Mapping) -> Qwen2AudioConfig:
    """A Qwen2-Audio `config.json` dict as a `Qwen2AudioConfig`, head untied (module docstring).

    Left-out fields take transformers' defaults; rope theta comes from `rope_parameters` (5.x) or
    the top level (4.x). NotImplementedError for a rope type, sliding window, head_dim, embedding
    scale or activation not modelled.
    """
    text = {**_HF_TEXT_DEFAULTS, **dict(hf_config.get("text_config") or {})}
    audio = {**_HF_AUDIO_DEFAULTS, **dict(hf_config.get("audio_config") or {})}
    rope = text.get("rope_parameters") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise NotImplementedError(f"text_config.rope_parameters.rope_type={rope_type!r}")
    if text.get("use_sliding_window"):
        raise NotImplementedError("text_config.use_sliding_window=true is not supported")
    heads = text["num_attention_heads"]
    head_dim = text.get("head_dim")
    if head_dim is not None and head_dim * heads != text["hidden_size"]:
        raise NotImplementedError(
            f"text_config.head_dim={head_dim} differs from hidden_size / num_attention_heads"
        )
    if audio.get("scale_embedding"):
        raise NotImplementedError("audio_config.scale_embedding=true is not supported")
    for key in ("activation_function",):
        if audio.get(key, "gelu") != "gelu":
            raise NotImplementedError(f"audio_config.{key}={audio[key]!r} (expected 'gelu')")
    if text.get("hidden_act", "silu") != "silu":
        raise NotImplementedError(f"text_config.hidden_act={text['hidden_act']!r}")
    text_config = TextConfig(
        vocab_size=text["vocab_size"],
        hidden_size=text["hidden_size"],
        intermediate_size=text["intermediate_size"],
        num_hidden_layers=text["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=text["num_key_value_heads"] or heads,
        rope_theta=float(rope.get("rope_theta", text["rope_theta"])),
        rms_norm_eps=text["rms_norm_eps"],
        # Never tied, whatever the config says: transformers' class declares no tied weights,
        # so `save_pretrained` writes the head and the model uses it (module docstring).
        tie_word_embeddings=False,
    )
    audio_config = AudioEncoderConfig(
        num_mel_bins=audio["num_mel_bins"],
        d_model=audio["d_model"],
        encoder_layers=audio["encoder_layers"],
        encoder_attention_heads=audio["encoder_attention_heads"],
        encoder_ffn_dim=audio["encoder_ffn_dim"],
        max_source_positions=audio["max_source_positions"],
    )
    token = hf_config.get("audio_token_index", hf_config.get("audio_token_id", _HF_AUDIO_TOKEN_ID))
    return Qwen2AudioConfig(audio=audio_config, text=text_config, audio_token_id=token)


def load_hf_config(path: str | os.PathLike) -> Qwen2AudioConfig:
    """Reads `config.json` of a checkpoint directory into a `Qwen2AudioConfig`."""
    with open(os.path.join(os.fspath(path), "config.json")) as f:
        return speech_lm_config_from_hf(json.load(f))


def speech_lm_config_to_hf(config: Qwen2AudioConfig) -> dict:
    """The `config.json` dict of `config` (untied): the inverse of `speech_lm_config_from_hf`."""
    text = dataclasses.asdict(config.text)
    text.pop("tie_word_embeddings")
    audio = dataclasses.asdict(config.audio)
    audio.pop("layer_norm_eps")  # fixed at 1e-5 in transformers, not a config field
    return {
        "model_type": "qwen2_audio",
        "architectures": ["Qwen2AudioForConditionalGeneration"],
        "audio_token_index": config.audio_token_id,
        "audio_config": {"model_type": "qwen2_audio_encoder", **audio},
        # The head is written as a tensor of its own (`export.hf_tensor_specs`), which
        # transformers' class reads whatever these flags say; false states what the file holds.
        "text_config": {"model_type": "qwen2", **hf_rope(text), "tie_word_embeddings": False},
        "tie_word_embeddings": False,
    }


def hf_param_map(config: Qwen2AudioConfig) -> dict[str, tuple[ParamPath, Transform]]:
    """Hub key -> (path of the `Qwen2AudioLM` parameter, layout conversion) for every weight."""
    table = ParamTable()
    for conv in ("conv1", "conv2"):
        table.conv(f"audio_tower.{conv}", ("audio_tower", conv))
    table["audio_tower.embed_positions.weight"] = (("audio_tower", "embed_positions"), "copy")
    for i in range(config.audio.encoder_layers):
        hub, path = f"audio_tower.layers.{i}", ("audio_tower", "layers", i)
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            bias = proj != "k_proj"
            table.linear(f"{hub}.self_attn.{proj}", (*path, "self_attn", proj), bias=bias)
        table.linear(f"{hub}.fc1", (*path, "fc1"))
        table.linear(f"{hub}.fc2", (*path, "fc2"))
        table.norm(f"{hub}.self_attn_layer_norm", (*path, "self_attn_layer_norm"))
        table.norm(f"{hub}.final_layer_norm", (*path, "final_layer_norm"))
    table.norm("audio_tower.layer_norm", ("audio_tower", "layer_norm"))
    table.linear("multi_modal_projector.linear", ("multi_modal_projector",))
    table.decoder(config.text, qkv_bias=True)
    return table


def load_hf_state_dict(
    model: Qwen2AudioLM, state_dict: Mapping[str, np.ndarray], *, source: str = "state dict"
) -> Qwen2AudioLM:
    """Copies a transformers Qwen2-Audio state dict into `model`, in place (as `assign_tensors`); a
    tied model ignores `language_model.lm_head.weight`."""
    keys = {hub_key(k): k for k in state_dict}
    if model.config.text.tie_word_embeddings:
        keys.pop("language_model.lm_head.weight", None)
    return assign_tensors(model, hf_param_map(model.config), state_dict, keys, source=source)
