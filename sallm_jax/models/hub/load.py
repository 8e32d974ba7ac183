"""User-facing loader: a Hugging Face speech-LM directory -> model, tokenizer, processor."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from sallm_jax.models.families import ModelFamily, family_for_hf_config
from sallm_jax.models.hub.peft import ADAPTER_CONFIG, load_peft_adapter
from sallm_jax.models.hub.safetensors_io import SafetensorsDir

DType = Literal["float32", "bfloat16"]


@dataclasses.dataclass(frozen=True)
class ProcessorSettings:
    """What turns audio and text into model inputs for a checkpoint.

    num_mel_bins: log-mel bins per frame (128 Qwen2-Audio, 80 Granite Speech); feature_size: model
    input width per frame (twice num_mel_bins for Granite's pairs); sampling_rate: Hz; audio_token:
    the placeholder the processor expands to one per audio embedding, audio_token_id its id;
    chat_template: Jinja, or None; eos_token_ids: generation_config.json's (empty without it).
    """

    num_mel_bins: int
    feature_size: int
    sampling_rate: int
    audio_token: str
    audio_token_id: int
    chat_template: str | None
    eos_token_ids: tuple[int, ...] = ()


@dataclasses.dataclass
class Checkpoint:
    """A loaded checkpoint: model, tokenizer (None if absent), processor settings, family."""

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

    Args:
      path: checkpoint directory (config.json, model.safetensors or shards, tokenizer and
        preprocessor files); the family comes from config.json.
      dtype: "float32" or "bfloat16", the parameters' storage.
      compute_dtype: the activations' dtype (`dtype` when None); logits are float32 either way.
      adapter_dir: a PEFT LoRA adapter directory; when None, `path` itself if it holds one.
      shardings: abstract state -> a `NamedSharding` per variable (e.g.
        `Partitioner.param_shardings`), each process reading only its rows; None: one device.

    Returns Checkpoint(model, tokenizer or None, ProcessorSettings, family). Raises ValueError for
    another dtype, FileNotFoundError without config.json or weights, NotImplementedError for an
    unregistered model_type.
    """
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
    if adapter_dir is None and os.path.exists(os.path.join(path, ADAPTER_CONFIG)):
        adapter_dir = path
    if adapter_dir is not None:
        load_peft_adapter(model, adapter_dir)

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
    eos = _read_json(os.path.join(path, "generation_config.json")).get("eos_token_id")
    settings = ProcessorSettings(
        num_mel_bins=num_mel_bins,
        feature_size=feature_size,
        sampling_rate=int(features.get("sampling_rate", family.sampling_rate)),
        audio_token=processor.get("audio_token", family.audio_token),
        audio_token_id=config.audio_token_id,
        chat_template=_chat_template(path, tokenizer),
        eos_token_ids=tuple(eos if isinstance(eos, list) else [] if eos is None else [eos]),
    )
    return Checkpoint(model=model, tokenizer=tokenizer, processor=settings, family=family)
