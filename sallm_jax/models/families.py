"""Model families: one record per speech LM kind (Qwen2-Audio, Granite Speech), and its lookups.

A family registers itself (`register_family`) in its own module; `BUILTIN_FAMILIES` are imported
on the first lookup, so importing this module imports no model. Code that treats families
differently asks the record (`family_for_*`), not the config or model class.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable, Mapping

import numpy as np

# Modules that call `register_family` for the families this package ships.
BUILTIN_FAMILIES = (
    "sallm_jax.models.qwen2_audio.family",
    "sallm_jax.models.granite_speech.family",
)


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    """How one kind of speech LM is configured, built, read, written and fed.

    Attributes:
      model_type: config.json's `model_type`.
      architecture: config.json's `architectures[0]`, the transformers class of the checkpoint.
      config_class: this package's config dataclass.
      model_class: the nnx.Module; constructor `(config, *, rngs, dtype, param_dtype)`.
      from_sizes: (audio sizes, text sizes, vocab_size, audio_token_id) -> config of a new
        model at a config file's `model.audio` / `model.text`.
      tiny_sizes: () -> {"audio": ..., "text": ...}: the default new model (a few layers of
        width 64-128), in `from_sizes`'s form.
      config_from_hf: config.json dict -> config.
      config_to_hf: config -> config.json dict, as transformers reads it.
      param_map: config -> {Hub key: (variable path, layout conversion)}.
      load_state_dict: `(model, tensors, *, source)` -> model, filled in place.
      feature_frames: 16 kHz samples -> valid feature frames (ints or arrays).
      audio_tokens: (config, valid feature frames) -> audio placeholders (ints or arrays).
      input_width: config -> input features per frame.
      frames_per_input: log-mel frames stacked into one input frame (input_width / mel bins).
      encoder, projector: attribute names of the audio encoder and the projector.
      audio_token: the processor's audio placeholder string (id: config.audio_token_id); a
        prompt holds one copy per audio embedding of its clip (`audio_tokens`).
      user_content: user-turn text -> the turn's `content` with one clip, as the family's chat
        template takes it (Qwen2-Audio: typed parts; Granite Speech: placeholder and text in
        one string, as its model card writes it).
      reference_frames: config -> feature frames of a clip transformers' class accepts.
      reference_audio_inputs: (features [B, frames, width], lengths [B], audio tokens [B]) ->
        transformers' forward audio keyword arguments, as NumPy arrays.
      sampling_rate: the feature extractor's sample rate in Hz.
      max_audio_seconds: config -> the longest clip the encoder takes, in seconds (math.inf
        for relative positions).
      own_head: (head key, embedding key) when transformers' class always keeps its LM head as
        a tensor of its own (Qwen2-Audio): a tied export writes the table under both keys.
        None when the class ties by the config (Granite Speech).
    """

    model_type: str
    architecture: str
    config_class: type
    model_class: type
    from_sizes: Callable[[Mapping, Mapping, int, int], object]
    tiny_sizes: Callable[[], dict]
    config_from_hf: Callable[[Mapping], object]
    config_to_hf: Callable[[object], dict]
    param_map: Callable[[object], dict]
    load_state_dict: Callable[..., object]
    feature_frames: Callable
    audio_tokens: Callable
    input_width: Callable[[object], int]
    frames_per_input: int
    encoder: str
    projector: str
    audio_token: str
    user_content: Callable[[str], object]
    reference_frames: Callable[[object], int]
    reference_audio_inputs: Callable[[np.ndarray, np.ndarray, np.ndarray], dict]
    sampling_rate: int = 16000
    max_audio_seconds: Callable[[object], float] = lambda config: math.inf
    own_head: tuple[str, str] | None = None


_REGISTRY: dict[str, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    """Adds `family` under its model_type and returns it; ValueError when another holds it."""
    held = _REGISTRY.get(family.model_type)
    if held is not None and held != family:
        raise ValueError(f"model_type {family.model_type!r} is already registered")
    _REGISTRY[family.model_type] = family
    return family


def families() -> dict[str, ModelFamily]:
    """model_type -> ModelFamily for every registered family, the built-in ones included."""
    for module in BUILTIN_FAMILIES:
        importlib.import_module(module)
    return dict(_REGISTRY)


def family_for_type(model_type: str) -> ModelFamily:
    """The family of a config.json `model_type`; the error lists the supported ones."""
    known = families()
    if model_type not in known:
        raise NotImplementedError(
            f"config.json model_type={model_type!r}; supported: {sorted(known)}"
        )
    return known[model_type]


def family_for_hf_config(hf_config: Mapping) -> ModelFamily:
    """The family of a config.json dict: by `model_type`, else by `architectures`."""
    model_type = hf_config.get("model_type", "")
    if not model_type:
        by_class = {f.architecture: f for f in families().values()}
        for architecture in hf_config.get("architectures") or ():
            if architecture in by_class:
                return by_class[architecture]
    return family_for_type(model_type)


def family_for_config(config: object) -> ModelFamily:
    """The family whose config class `config` is."""
    for family in families().values():
        if isinstance(config, family.config_class):
            return family
    raise TypeError(f"{type(config).__name__} is not the config of a registered model family")


def family_for_model(model: object) -> ModelFamily:
    """The family whose model class `model` is."""
    for family in families().values():
        if isinstance(model, family.model_class):
            return family
    raise TypeError(f"{type(model).__name__} is not a supported speech LM")


def num_audio_tokens(config: object, num_samples: int) -> int:
    """Audio placeholders a clip of `num_samples` 16 kHz samples takes, on the host."""
    family = family_for_config(config)
    return int(family.audio_tokens(config, family.feature_frames(num_samples)))
