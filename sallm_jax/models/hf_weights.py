"""Load Hugging Face Qwen2-Audio checkpoints (`config.json` + safetensors) into `SpeechLM`.

Checkpoint keys use the Hub layout that `save_pretrained` writes in transformers 5.23:
`audio_tower.*`, `multi_modal_projector.linear.*`, `language_model.model.*` and
`language_model.lm_head.weight`. The head is always its own tensor: transformers'
`Qwen2AudioForConditionalGeneration` declares no tied weights (5.x), so it reads the saved head
whatever `tie_word_embeddings` says. The in-memory layout of a
5.x `Qwen2AudioForConditionalGeneration.state_dict()` (`model.audio_tower.*`,
`model.language_model.*`, `lm_head.weight`) is accepted too and renamed on the way in.

Layout conversions: torch Linear weight [out, in] -> Flax kernel [in, out]; Conv1d weight
[out, in, k] -> Flax conv kernel [k, in, out]; LayerNorm weight -> scale; RMSNorm weight -> scale;
Embedding weight -> embedding.

The user-facing entry is `load_checkpoint(path, dtype=..., adapter_dir=...)`: it picks the model
family from config.json (`families.family_for_hf_config`: Qwen2-Audio here, Granite Speech in
granite_weights.py) and returns the model, its tokenizer and its `ProcessorSettings`. Weights
stream from the safetensors files (`SafetensorsDir`) block by block into the target dtype.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sallm_jax.models.config import AudioEncoderConfig, SpeechLMConfig, TextConfig
from sallm_jax.models.paths import ParamPath, node_at
from sallm_jax.models.safetensors_io import CHUNK_BYTES, SafetensorsDir, aligned_empty
from sallm_jax.models.speech_lm import SpeechLM

Transform = Literal["copy", "linear", "conv"]

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


def _shape(tensors: Mapping[str, np.ndarray], key: str) -> tuple[int, ...]:
    if isinstance(tensors, SafetensorsDir):
        return tensors.shape(key)
    return tuple(np.shape(tensors[key]))


def _itemsize(tensors: Mapping[str, np.ndarray], key: str) -> int:
    if isinstance(tensors, SafetensorsDir):
        return tensors.dtype(key).itemsize
    return np.asarray(tensors[key]).dtype.itemsize


def _rows(tensors: Mapping[str, np.ndarray], key: str, rows: slice) -> np.ndarray:
    if isinstance(tensors, SafetensorsDir):
        return tensors.read_rows(key, rows)
    return np.asarray(tensors[key])[rows]


def converted_block(tensors: Mapping[str, np.ndarray], key: str, transform: Transform,
                    index: tuple[slice, ...], shape: tuple[int, ...], dtype) -> np.ndarray:
    """The block `index` of tensor `key` in the model's layout (`shape`) and `dtype`.

    Both layout conversions reverse the axes, so the block's last axis is a range of the
    stored tensor's first axis: those rows are read CHUNK_BYTES at a time and written,
    transposed and cast, into one aligned buffer, which is all the block costs besides a chunk.
    """
    bounds = [range(*s.indices(n)) for s, n in zip(index, shape, strict=True)] if shape else []
    out = aligned_empty([len(b) for b in bounds], dtype)
    if not shape:
        out[...] = _rows(tensors, key, slice(None))
        return out
    reverse = transform != "copy"
    source = bounds[::-1] if reverse else bounds
    rows, rest = source[0], tuple(slice(b.start, b.stop) for b in source[1:])
    stored = _shape(tensors, key)
    row_bytes = max(1, math.prod(stored[1:]) * _itemsize(tensors, key))
    step = max(1, CHUNK_BYTES // row_bytes)
    for first in range(rows.start, rows.stop, step):
        last = min(first + step, rows.stop)
        chunk = _rows(tensors, key, slice(first, last))[(slice(None), *rest)]
        at = slice(first - rows.start, last - rows.start)
        if reverse:
            out[..., at] = chunk.transpose(tuple(range(chunk.ndim))[::-1])
        else:
            out[at] = chunk
    return out


def placed_tensor(tensors: Mapping[str, np.ndarray], key: str, transform: Transform,
                  target) -> jax.Array:
    """Tensor `key` as the array `target` (a parameter or its ShapeDtypeStruct) should hold:
    its layout and dtype, laid out by its `NamedSharding` (one device without one). Each
    device's block is built by `converted_block`, so a process reads only the rows of the
    blocks it holds; on a CPU the aligned block becomes the array without a copy."""
    sharding = getattr(target, "sharding", None)
    if not isinstance(sharding, jax.sharding.NamedSharding):
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    shape, dtype = tuple(target.shape), target.dtype
    return jax.make_array_from_callback(
        shape, sharding, lambda index: converted_block(tensors, key, transform, index, shape,
                                                      dtype))


def speech_lm_config_from_hf(hf_config: Mapping) -> SpeechLMConfig:
    """Maps a Qwen2-Audio `config.json` dict onto `SpeechLMConfig`.

    Fields the file leaves out take transformers' class defaults. rope theta is read from
    `rope_parameters` (5.x) or the top level (4.x).
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
    return SpeechLMConfig(audio=audio_config, text=text_config, audio_token_id=token)


def load_hf_config(path: str | os.PathLike) -> SpeechLMConfig:
    """Reads `config.json` of a checkpoint directory into a `SpeechLMConfig`."""
    with open(os.path.join(os.fspath(path), "config.json")) as f:
        return speech_lm_config_from_hf(json.load(f))


def hf_rope(text: Mapping) -> dict:
    """A text_config dict with rope theta where both readers look: `rope_parameters` (5.x) and
    the top level (4.x)."""
    text = dict(text)
    theta = text.pop("rope_theta")
    return {
        **text,
        "rope_theta": theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": theta},
    }


def speech_lm_config_to_hf(config: SpeechLMConfig) -> dict:
    """The Qwen2-Audio `config.json` dict for `config`: the inverse of `speech_lm_config_from_hf`,
    except that a tied model comes back untied (its head is exported as its own tensor)."""
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


def hub_key(key: str) -> str:
    """Renames 5.x in-memory state-dict keys to the Hub layout; Hub keys pass unchanged.

    The same renaming serves Qwen2-Audio and Granite Speech (`model.language_model.*`,
    `model.<tower>.*`, `lm_head.weight`).
    """
    if key.startswith("model.language_model."):
        return "language_model.model." + key[len("model.language_model.") :]
    if key.startswith("model."):
        return key[len("model.") :]
    if key == "lm_head.weight":
        return "language_model.lm_head.weight"
    return key


class ParamTable(dict[str, tuple[ParamPath, Transform]]):
    """Hub key -> (variable path, layout conversion), filled one torch module at a time."""

    def _weight_and_bias(
        self, hub: str, path: ParamPath, name: str, transform: Transform, bias: bool
    ) -> None:
        self[f"{hub}.weight"] = ((*path, name), transform)
        if bias:
            self[f"{hub}.bias"] = ((*path, "bias"), "copy")

    def linear(self, hub: str, path: ParamPath, bias: bool = True) -> None:
        """torch Linear `hub` -> the nnx.Linear at `path`."""
        self._weight_and_bias(hub, path, "kernel", "linear", bias)

    def conv(self, hub: str, path: ParamPath, bias: bool = True) -> None:
        """torch Conv1d `hub` -> the nnx.Conv at `path`."""
        self._weight_and_bias(hub, path, "kernel", "conv", bias)

    def norm(self, hub: str, path: ParamPath, bias: bool = True) -> None:
        """torch LayerNorm / RMSNorm / BatchNorm1d affine `hub` -> the norm at `path` (scale)."""
        self._weight_and_bias(hub, path, "scale", "copy", bias)

    def decoder(self, text: TextConfig, *, qkv_bias: bool) -> None:
        """`language_model.*` of a Qwen2 / Granite decoder (a `Qwen2LM` at `language_model`);
        q/k/v carry biases when `qkv_bias`, the LM head is read only when it is not tied."""
        lm = "language_model.model"
        embed = ("language_model", "embed_tokens", "embedding")
        self[f"{lm}.embed_tokens.weight"] = (embed, "copy")
        for i in range(text.num_hidden_layers):
            hub, path = f"{lm}.layers.{i}", ("language_model", "layers", i)
            for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
                bias = qkv_bias and proj != "o_proj"
                self.linear(f"{hub}.self_attn.{proj}", (*path, "self_attn", proj), bias=bias)
            for proj in ("gate_proj", "up_proj", "down_proj"):
                self.linear(f"{hub}.mlp.{proj}", (*path, "mlp", proj), bias=False)
            self.norm(f"{hub}.input_layernorm", (*path, "input_layernorm"), bias=False)
            self.norm(
                f"{hub}.post_attention_layernorm", (*path, "post_attention_layernorm"), bias=False
            )
        self.norm(f"{lm}.norm", ("language_model", "norm"), bias=False)
        if not text.tie_word_embeddings:
            self.linear("language_model.lm_head", ("language_model", "lm_head"), bias=False)


def hf_param_map(config: SpeechLMConfig) -> dict[str, tuple[ParamPath, Transform]]:
    """Hub key -> (path of the `SpeechLM` parameter, layout conversion) for every weight."""
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
    model: SpeechLM, state_dict: Mapping[str, np.ndarray], *, source: str = "state dict"
) -> SpeechLM:
    """Copies a transformers Qwen2-Audio state dict into `model`'s parameters, in place.

    `model` may be concrete or abstract (from `nnx.eval_shape`); each array is cast to the
    parameter's dtype and, when the parameter already has a `NamedSharding`, placed with it.
    A tied checkpoint may carry `language_model.lm_head.weight`; it is then ignored.
    `state_dict` may be a `SafetensorsDir`, which is then read one tensor at a time.

    Raises:
      ValueError naming every missing key, unexpected key and shape mismatch at once.
    """
    keys = {hub_key(k): k for k in state_dict}
    if model.config.text.tie_word_embeddings:
        keys.pop("language_model.lm_head.weight", None)
    return assign_tensors(model, hf_param_map(model.config), state_dict, keys, source=source)


def assign_tensors(
    model: nnx.Module,
    table: Mapping[str, tuple[ParamPath, Transform]],
    tensors: Mapping[str, np.ndarray],
    keys: Mapping[str, str],
    *,
    source: str,
) -> nnx.Module:
    """Fills `model`'s variables from `tensors`, checking everything before changing anything.

    Args:
      model: concrete or abstract model, changed in place.
      table: Hub key -> (variable path, layout conversion), e.g. `hf_param_map(config)`.
      tensors: checkpoint key -> array; a `SafetensorsDir` is checked from its header and then
        read, converted to the variable's dtype and placed one tensor at a time, so host memory
        holds one tensor, not the checkpoint.
      keys: Hub key -> key of `tensors` (the renaming of in-memory layouts).
      source: names the checkpoint in errors.

    Raises:
      ValueError naming every missing key, unexpected key and shape mismatch at once.
    """
    problems = []
    missing = sorted(set(table) - set(keys))
    unexpected = sorted(set(keys) - set(table))
    if missing:
        problems.append(f"missing keys: {missing}")
    if unexpected:
        problems.append(f"unexpected keys: {unexpected}")
    for key in sorted(set(table) & set(keys)):
        path, transform = table[key]
        stored = _shape(tensors, keys[key])
        # Both layout conversions reverse the axes (linear .T, conv transpose(2, 1, 0)).
        converted = stored if transform == "copy" else stored[::-1]
        expected = tuple(node_at(model, path).get_value().shape)
        if converted != expected:
            problems.append(
                f"shape mismatch for {key}: checkpoint {stored} "
                f"({transform} -> {converted}), model expects {expected}"
            )
    if problems:
        name = type(model).__name__
        raise ValueError(f"cannot load {source} into {name}: " + "; ".join(problems))
    for key in sorted(table):
        path, transform = table[key]
        variable = node_at(model, path)
        variable.set_value(placed_tensor(tensors, keys[key], transform, variable.get_value()))
    return model


def from_pretrained(
    path: str | os.PathLike, *, dtype=jnp.float32, param_dtype=jnp.float32
) -> SpeechLM:
    """Builds `SpeechLM` from a checkpoint directory (config.json + safetensors).

    The model is created abstractly (no random init is allocated) and filled from the files one
    tensor at a time, each converted straight to `param_dtype`.
    """
    config = load_hf_config(path)
    model = nnx.eval_shape(
        lambda: SpeechLM(config, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=param_dtype)
    )
    with SafetensorsDir(path) as tensors:
        return load_hf_state_dict(model, tensors, source=os.fspath(path))
