"""PEFT LoRA adapter files (`adapter_config.json` + `adapter_model.safetensors`) <-> `LoRALinear`;
keys `base_model.model.<Hub module name>.lora_{A,B}.weight`, names from `ModelFamily.param_map`."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import load_file, save_file

from sallm_jax.models.families import family_for_model
from sallm_jax.models.hub.param_table import hub_key
from sallm_jax.models.lora import lora_modules, wrap_linear
from sallm_jax.models.paths import ParamPath

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."
_WEIGHT = ".weight"
_PEFT_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<factor>[AB])(?:\.default)?\.weight$")


def read_adapter_config(adapter_dir: str | os.PathLike) -> dict:
    """`adapter_dir`'s `adapter_config.json`, checked to be plain LoRA (no DoRA, bias or extra
    modules; else NotImplementedError listing every problem); `lora_dropout` is not read."""
    path = os.path.join(os.fspath(adapter_dir), ADAPTER_CONFIG)
    with open(path) as f:
        config = json.load(f)
    problems = []
    if config.get("peft_type", "LORA") != "LORA":
        problems.append(f"peft_type={config['peft_type']!r} (expected 'LORA')")
    for key in ("use_dora", "fan_in_fan_out", "lora_bias"):
        if config.get(key):
            problems.append(f"{key}=true is not supported")
    if config.get("bias", "none") != "none":
        problems.append(f"bias={config['bias']!r} is not supported (expected 'none')")
    for key in ("rank_pattern", "alpha_pattern", "modules_to_save"):
        if config.get(key):
            problems.append(f"{key} is not supported")
    if problems:
        raise NotImplementedError(f"{path}: " + "; ".join(problems))
    return config


def adapter_scaling(config: dict) -> tuple[int, float]:
    """(r, alpha) such that alpha / r is PEFT's scaling (rsLoRA's alpha / sqrt(r) folded in)."""
    r, alpha = int(config["r"]), float(config["lora_alpha"])
    if config.get("use_rslora"):
        alpha = alpha * r / math.sqrt(r)
    return r, alpha


def linear_modules(model: nnx.Module) -> dict[str, ParamPath]:
    """Hub module name (a Linear weight key without `.weight`) -> that layer's path in `model`."""
    table = family_for_model(model).param_map(model.config)
    return {key[: -len(_WEIGHT)]: path[:-1]
            for key, (path, transform) in table.items() if transform == "linear"}


def module_path_fn(model: nnx.Module) -> Callable[[str], ParamPath | None]:
    """Checkpoint module name (either layout, no `.weight`) -> its path in `model`, or None."""
    linears = linear_modules(model)
    return lambda name: linears.get(hub_key(name + _WEIGHT)[: -len(_WEIGHT)])


def load_peft_adapter(
    model: nnx.Module,
    adapter_dir: str | os.PathLike,
    *,
    module_path: Callable[[str], ParamPath | None] | None = None,
    rngs: nnx.Rngs | None = None,
) -> nnx.Module:
    """Wraps the modules a PEFT adapter names and loads its factors, in place; returns `model`.

    The modules come from `adapter_model.safetensors`'s keys, not `target_modules`, mapped by
    `module_path` (checkpoint module name -> path or None; default `module_path_fn(model)`); `rngs`
    only seeds lora_a before it is overwritten. ValueError names every key that matches no module,
    lacks its partner factor or has the wrong shape.
    """
    adapter_dir = os.fspath(adapter_dir)
    module_path = module_path or module_path_fn(model)
    config = read_adapter_config(adapter_dir)
    rank, alpha = adapter_scaling(config)
    tensors = load_file(os.path.join(adapter_dir, ADAPTER_WEIGHTS))
    factors: dict[ParamPath, dict[str, object]] = {}
    problems = []
    for key, array in tensors.items():
        match = _PEFT_KEY.match(key.removeprefix(_PEFT_PREFIX))
        path = module_path(match["module"]) if match else None
        if path is None:
            problems.append(f"{key} matches no linear layer of {type(model).__name__}")
            continue
        factors.setdefault(path, {})[match["factor"]] = (key, array)
    for path, pair in factors.items():
        for factor in {"A", "B"} - set(pair):
            problems.append(f"{'.'.join(map(str, path))} lacks lora_{factor}")
    if problems:
        raise ValueError(f"cannot load {adapter_dir}: " + "; ".join(sorted(problems)))
    rngs = rngs or nnx.Rngs(0)
    for path, pair in sorted(factors.items(), key=lambda item: str(item[0])):
        module = wrap_linear(model, path, rank=rank, alpha=alpha, rngs=rngs)
        for factor, target in (("A", module.lora_a), ("B", module.lora_b)):
            key, array = pair[factor]
            value = array.T  # PyTorch [r, in] / [out, r] -> Flax [in, r] / [r, out]
            if value.shape != tuple(target.get_value().shape):
                problems.append(
                    f"{key}: shape {array.shape}, expected {tuple(target.get_value().shape[::-1])}"
                )
                continue
            target.set_value(jnp.asarray(value, dtype=target.get_value().dtype))
    if problems:
        raise ValueError(f"cannot load {adapter_dir}: " + "; ".join(problems))
    return model


def save_peft_adapter(model: nnx.Module, adapter_dir: str | os.PathLike) -> None:
    """Writes the model's LoRA adapters as PEFT `adapter_config.json` + `adapter_model.safetensors`
    (lora_A = lora_a.T, lora_B = lora_b.T; `target_modules` a regex over either transformers
    layout); ValueError when there are no adapters or their (rank, alpha) differ."""
    adapter_dir = os.fspath(adapter_dir)
    modules = list(lora_modules(model))
    if not modules:
        raise ValueError(f"{type(model).__name__} has no LoRA adapters to save")
    settings = {(m.rank, m.alpha) for _, m in modules}
    if len(settings) > 1:
        raise ValueError(
            f"adapters with different (rank, alpha) {sorted(settings)} cannot be saved"
        )
    ((rank, alpha),) = settings
    names = {path: name for name, path in linear_modules(model).items()}
    tensors = {}
    for path, module in modules:
        name = f"base_model.model.{names[path]}"
        for factor, param in (("A", module.lora_a), ("B", module.lora_b)):
            array = np.asarray(param.get_value()).T  # Flax [in, r] / [r, out] -> PyTorch layout
            tensors[f"{name}.lora_{factor}.weight"] = np.ascontiguousarray(array)
    scopes = sorted({str(path[0]) for path, _ in modules})
    leaves = sorted({str(path[-1]) for path, _ in modules})
    target = rf".*(?:{'|'.join(map(re.escape, scopes))})\..*\.(?:{'|'.join(leaves)})"
    config = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": None,
        "r": rank,
        "lora_alpha": alpha,
        "target_modules": target,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    os.makedirs(adapter_dir, exist_ok=True)
    with open(os.path.join(adapter_dir, ADAPTER_CONFIG), "w") as f:
        json.dump(config, f, indent=2)
    save_file(tensors, os.path.join(adapter_dir, ADAPTER_WEIGHTS), metadata={"format": "pt"})
