"""A model written out as a Hugging Face checkpoint directory that transformers (and PEFT) load,
through the families' key maps (`ModelFamily.param_map`)."""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from typing import Literal

import jax.numpy as jnp
import numpy as np
from flax import nnx

from sallm_jax.models.families import family_for_config, family_for_model
from sallm_jax.models.hub.peft import save_peft_adapter
from sallm_jax.models.hub.safetensors_io import (
    CHUNK_BYTES,
    TensorSpec,
    row_blocks,
    write_safetensors,
)
from sallm_jax.models.layer_scan import LayerViews, layers_unstacked, stacked_node
from sallm_jax.models.lora import LoRALinear, lora_modules

LoRAExport = Literal["merged", "adapter"]

# Files of a checkpoint directory that describe the processor rather than the weights; copied
# from `source_dir` as they are.
_PROCESSOR_FILES = (
    "preprocessor_config.json",
    "processor_config.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)
_TOKENIZER_FILES = re.compile(
    r"^(tokenizer.*|vocab\.json|merges\.txt|special_tokens_map\.json|added_tokens\.json)$"
)


def hf_config_dict(config) -> dict:
    """The `config.json` dict for a model config, written by its family (`config_to_hf`)."""
    return family_for_config(config).config_to_hf(config)


def hf_tensor_specs(
    model: nnx.Module, *, merge_lora: bool = True, dtype=None
) -> list[TensorSpec]:
    """(Hub key, PyTorch-layout shape, dtype, blocks) for every weight of `model`, blocks of about
    CHUNK_BYTES computed when written; `merge_lora` folds enabled adapters into their kernels (else
    base kernels are written); `dtype` defaults to each parameter's."""
    family = family_for_model(model)
    table = family.param_map(model.config)
    if family.own_head and model.config.text.tie_word_embeddings:
        head, embeddings = family.own_head  # transformers reads a head of its own: write it
        table = {**table, head: table[embeddings]}
    views = LayerViews(model)
    specs = []
    for key, (path, transform) in sorted(table.items()):  # a layer's tensors one after another
        variable, stacked = stacked_node(model, path)
        parent, _ = stacked_node(model, path[:-1])
        merge = (merge_lora and path[-1] == "kernel" and isinstance(parent, LoRALinear)
                 and parent.enabled)
        shape = tuple(variable.get_value().shape)[int(stacked):]
        shape = shape if transform == "copy" else shape[::-1]
        specs.append((key, shape, np.dtype(dtype or variable.get_value().dtype),
                      functools.partial(_pytorch_blocks, views, path, merge, transform)))
    return specs


def _pytorch_blocks(views: LayerViews, path: tuple, merge: bool,
                    transform: str) -> Iterator[np.ndarray]:
    """PyTorch-layout rows of `path`'s variable by CHUNK_BYTES; LoRA folded in if `merge`."""
    value = views.node(path).get_value()
    if merge:
        adapter = views.node(path[:-1])
        value = (value.astype(jnp.float32) + adapter.delta()).astype(value.dtype)
    array = np.asarray(value)  # a view of the buffer on a CPU
    if transform == "copy":
        yield from row_blocks(array)
        return
    # Both conversions reverse the axes: the PyTorch layout's rows are this last axis.
    row_bytes = max(1, array[..., :1].nbytes)
    step = max(1, CHUNK_BYTES // row_bytes)
    axes = tuple(range(array.ndim))[::-1]
    for first in range(0, array.shape[-1], step):
        yield array[..., first:first + step].transpose(axes)


def save_safetensors_dir(
    specs: Sequence[TensorSpec],
    out_dir: str | os.PathLike,
    *,
    max_shard_bytes: int = 5 * 2**30,
) -> list[str]:
    """Writes `model.safetensors`, or shards and an index past `max_shard_bytes`, each tensor
    streamed block by block; returns the file names."""
    out_dir = os.fspath(out_dir)
    shards: list[list[TensorSpec]] = [[]]
    size = total = 0
    for spec in specs:
        nbytes = math.prod(spec[1]) * np.dtype(spec[2]).itemsize
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += nbytes
        total += nbytes
    if len(shards) == 1:
        write_safetensors(os.path.join(out_dir, "model.safetensors"), shards[0],
                          metadata={"format": "pt"})
        return ["model.safetensors"]
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for name, shard in zip(names, shards, strict=True):
        write_safetensors(os.path.join(out_dir, name), shard, metadata={"format": "pt"})
    index = {
        "metadata": {"total_size": total},
        "weight_map": {spec[0]: name for name, shard in zip(names, shards, strict=True)
                       for spec in sorted(shard)},
    }
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
    return names


def export_hf(
    model: nnx.Module,
    out_dir: str | os.PathLike,
    *,
    lora: LoRAExport = "merged",
    tokenizer=None,
    source_dir: str | os.PathLike | None = None,
    dtype=None,
    max_shard_bytes: int = 5 * 2**30,
) -> str:
    """Writes a Hugging Face checkpoint directory for `model`; returns `out_dir` as a string.

    Args:
      model: with or without LoRA adapters; left unchanged.
      out_dir: created if needed.
      lora: "merged" folds adapters into the kernels; "adapter" writes the base weights plus PEFT
        files (`PeftModel.from_pretrained(base, out_dir)`); anything else is a ValueError.
      tokenizer: saved with `save_pretrained` when given.
      source_dir: the model's source: its config.json is updated with ours (fields we do not model
        survive) and its processor files, and tokenizer files unless `tokenizer`, are copied.
      dtype: weight dtype on disk (default: the parameters' own).
      max_shard_bytes: shard size limit for model.safetensors.
    """
    if lora not in ("merged", "adapter"):
        raise ValueError(f"lora={lora!r}; expected 'merged' or 'adapter'")
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    config = hf_config_dict(model.config)
    with_adapter = lora == "adapter" and any(True for _ in lora_modules(model))
    if with_adapter and "has_lora_adapter" in config:
        # Granite Speech: transformers then switches the adapter on only for audio inputs.
        config["has_lora_adapter"] = True
    if source_dir is not None:
        source_dir = os.fspath(source_dir)
        with open(os.path.join(source_dir, "config.json")) as f:
            base = json.load(f)
        for section, values in config.items():
            if isinstance(values, dict) and isinstance(base.get(section), dict):
                base[section].update(values)
            else:
                base[section] = values
        config = base
        for name in sorted(os.listdir(source_dir)):
            copy = name in _PROCESSOR_FILES or (tokenizer is None and _TOKENIZER_FILES.match(name))
            if copy:
                shutil.copy(os.path.join(source_dir, name), os.path.join(out_dir, name))
    if dtype is not None:
        config["torch_dtype"] = config["dtype"] = str(jnp.dtype(dtype))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    save_safetensors_dir(
        hf_tensor_specs(model, merge_lora=lora == "merged", dtype=dtype),
        out_dir,
        max_shard_bytes=max_shard_bytes,
    )
    if with_adapter:
        with layers_unstacked(model):  # the adapters under the Hub's per-layer names
            save_peft_adapter(model, out_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return out_dir
