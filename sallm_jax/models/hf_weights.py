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
from collections.abc import Callable, Mapping
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sallm_jax.models.config import AudioEncoderConfig, SpeechLMConfig, TextConfig
from sallm_jax.models.families import ModelFamily, family_for_hf_config, family_for_model
from sallm_jax.models.safetensors_io import CHUNK_BYTES, SafetensorsDir, aligned_empty
from sallm_jax.models.speech_lm import SpeechLM

Transform = Literal["copy", "linear", "conv"]
ParamPath = tuple[str | int, ...]

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


def _variable(model: nnx.Module, path: ParamPath) -> nnx.Variable:
    node = model
    for part in path:
        node = node[part] if isinstance(part, int) else getattr(node, part)
    return node


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
        expected = tuple(_variable(model, path).get_value().shape)
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
        variable = _variable(model, path)
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


# ---------------------------------------------------------------------------------------------
# Model families and the user-facing loader.


def module_path_fn(model: nnx.Module) -> Callable[[str], ParamPath | None]:
    """Maps a checkpoint module name (a Linear weight key without `.weight`, Hub or in-memory
    layout) to that layer's path in `model`, or None; built from the family's key map."""
    family = family_for_model(model)
    suffix = ".weight"
    linears = {
        key[: -len(suffix)]: path[:-1]
        for key, (path, transform) in family.param_map(model.config).items()
        if transform == "linear"
    }
    return lambda name: linears.get(hub_key(name + suffix)[: -len(suffix)])


DType = Literal["float32", "bfloat16"]


@dataclasses.dataclass(frozen=True)
class ProcessorSettings:
    """What turns audio and text into model inputs for a checkpoint.

    Attributes:
      num_mel_bins: log-mel bins per frame (128 Qwen2-Audio, 80 Granite Speech).
      feature_size: model input width per frame (num_mel_bins; 2 x that for Granite's stacked
        frame pairs).
      sampling_rate: audio sample rate in Hz.
      audio_token: placeholder string the processor expands to one token per audio embedding.
      audio_token_id: its id (`config.audio_token_id`).
      chat_template: Jinja chat template, or None when the directory holds none.
    """

    num_mel_bins: int
    feature_size: int
    sampling_rate: int
    audio_token: str
    audio_token_id: int
    chat_template: str | None


@dataclasses.dataclass
class Checkpoint:
    """A loaded checkpoint: `model`, its `tokenizer` (None when the directory has no tokenizer
    files) and its `processor` settings; `family` names the model class."""

    model: nnx.Module
    tokenizer: object | None
    processor: ProcessorSettings
    family: ModelFamily


def _read_json(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _chat_template(path: str, tokenizer) -> str | None:
    """The template from chat_template.jinja / .json, processor_config.json or the tokenizer."""
    jinja = os.path.join(path, "chat_template.jinja")
    if os.path.exists(jinja):
        with open(jinja) as f:
            return f.read()
    for name in ("chat_template.json", "processor_config.json"):
        template = _read_json(os.path.join(path, name)).get("chat_template")
        if template:
            return template
    return getattr(tokenizer, "chat_template", None)


def _has_tokenizer(path: str) -> bool:
    names = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
    return any(os.path.exists(os.path.join(path, n)) for n in names)


def load_checkpoint(
    path: str | os.PathLike,
    *,
    dtype: DType = "float32",
    compute_dtype: DType | None = None,
    adapter_dir: str | os.PathLike | None = None,
    shardings: Callable[[nnx.State], nnx.State] | None = None,
) -> Checkpoint:
    """Loads a Hugging Face speech-LM directory: model, tokenizer and processor settings.

    The family (Qwen2-Audio or Granite Speech) comes from config.json's `model_type`. The model
    is built abstractly and its weights are converted into `dtype` tensor by tensor. The
    tokenizer is `transformers.AutoTokenizer` on the directory.

    Args:
      path: checkpoint directory (config.json, model.safetensors or shards, tokenizer and
        preprocessor files).
      dtype: "float32" or "bfloat16", the parameters' storage.
      compute_dtype: the activations' dtype, `dtype` when None; "bfloat16" over float32
        storage is mixed precision (logits stay float32 either way).
      adapter_dir: a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors) to wrap
        the model with; the checkpoint directory itself is used when it holds one and this is
        None (as the released Granite Speech checkpoints do).
      shardings: maps the abstract model state to a `NamedSharding` per variable (for example
        `Partitioner.param_shardings`); each tensor is then placed straight into its sharding,
        each process reading only the rows of the blocks it holds. None: one device.

    Returns:
      Checkpoint(model, tokenizer or None, ProcessorSettings, family).
    """
    from sallm_jax.models import lora  # lora imports this module

    path = os.fspath(path)
    for name, value in (("dtype", dtype), ("compute_dtype", compute_dtype or dtype)):
        if value not in ("float32", "bfloat16"):
            raise ValueError(f"{name}={value!r}; expected 'float32' or 'bfloat16'")
    param_dtype, jdtype = jnp.dtype(dtype), jnp.dtype(compute_dtype or dtype)
    hf_config = _read_json(os.path.join(path, "config.json"))
    if not hf_config:
        raise FileNotFoundError(f"no config.json in {path!r}")
    family = family_for_hf_config(hf_config)
    config = family.config_from_hf(hf_config)
    model = nnx.eval_shape(
        lambda: family.model_class(config, rngs=nnx.Rngs(0), dtype=jdtype,
                                   param_dtype=param_dtype)
    )
    if shardings is not None:
        state = nnx.state(model)
        nnx.update(model, jax.tree.map(
            lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
            state, shardings(state)))
    with SafetensorsDir(path) as tensors:
        family.load_state_dict(model, tensors, source=path)
    if adapter_dir is None and os.path.exists(os.path.join(path, lora.ADAPTER_CONFIG)):
        adapter_dir = path
    if adapter_dir is not None:
        lora.load_peft_adapter(model, adapter_dir)

    tokenizer = None
    if _has_tokenizer(path):
        import transformers

        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    features = _read_json(os.path.join(path, "preprocessor_config.json"))
    processor = _read_json(os.path.join(path, "processor_config.json"))
    melspec = features.get("melspec_kwargs") or {}  # Granite's extractor nests its mel options
    num_mel_bins = int(melspec.get("n_mels", features.get("feature_size", 0)))
    feature_size = 2 * num_mel_bins if melspec else num_mel_bins
    if not num_mel_bins:  # no preprocessor file: the model's own input width
        feature_size = family.input_width(config)
        num_mel_bins = feature_size // family.frames_per_input
    settings = ProcessorSettings(
        num_mel_bins=num_mel_bins,
        feature_size=feature_size,
        sampling_rate=int(features.get("sampling_rate", family.sampling_rate)),
        audio_token=processor.get("audio_token", family.audio_token),
        audio_token_id=config.audio_token_id,
        chat_template=_chat_template(path, tokenizer),
    )
    return Checkpoint(model=model, tokenizer=tokenizer, processor=settings, family=family)
