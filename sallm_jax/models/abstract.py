"""A model built from shapes alone (every array a ShapeDtypeStruct), and its parameter count."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from sallm_jax.models.families import family_for_config
from sallm_jax.models.lora import apply_lora


def abstract_model(config, *, dtype=jnp.float32, lora_rank: int = 0,
                   lora_alpha: float = 0.0) -> nnx.Module:
    """The model of `config`'s family built under `nnx.eval_shape`, parameters in `dtype`;
    `lora_rank` > 0 adds `apply_lora`'s default adapters with `lora_alpha` (`lora_rank` when 0)."""
    model_class = family_for_config(config).model_class

    def build() -> nnx.Module:
        model = model_class(config, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=dtype)
        if lora_rank:
            apply_lora(model, rank=lora_rank, alpha=lora_alpha or lora_rank, rngs=nnx.Rngs(1))
        return model

    return nnx.eval_shape(build)


def count_params(config, *, lora_rank: int = 0, filter: nnx.filterlib.Filter = nnx.Param) -> int:
    """Parameters selected by `filter`, counted from shapes alone (as torch's `sum(p.numel())`): by
    default every `nnx.Param` (BatchNorm statistics are not), LoRA factors too when `lora_rank` is
    set; `filter=LoRAParam` counts only the adapters."""
    state = nnx.state(abstract_model(config, lora_rank=lora_rank), filter)
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(state))
