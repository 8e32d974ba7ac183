"""A model built from shapes alone (every array a ShapeDtypeStruct), and its parameter count.

Parameter counts of the presets from `count_params` equal transformers' `sum(p.numel())` for the
same config (tests/models/test_presets.py).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from sallm_jax.models.families import family_for_config
from sallm_jax.models.lora import apply_lora


def abstract_model(config, *, dtype=jnp.float32, lora_rank: int = 0,
                   lora_alpha: float = 0.0) -> nnx.Module:
    """The model of `config`'s family built under `nnx.eval_shape`, parameters in `dtype`.

    With `lora_rank` > 0 the language model's q_proj / v_proj get adapters (`apply_lora`'s
    defaults, the layers the released Granite Speech adapters use) with `lora_alpha`
    (`lora_rank` when 0).
    """
    model_class = family_for_config(config).model_class

    def build() -> nnx.Module:
        model = model_class(config, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=dtype)
        if lora_rank:
            apply_lora(model, rank=lora_rank, alpha=lora_alpha or lora_rank, rngs=nnx.Rngs(1))
        return model

    return nnx.eval_shape(build)


def count_params(config, *, lora_rank: int = 0, filter: nnx.filterlib.Filter = nnx.Param) -> int:
    """Number of parameters selected by `filter`, from shapes alone (nothing is allocated).

    The default counts every `nnx.Param` (BatchNorm statistics are not parameters, as torch's
    `parameters()` leaves out buffers), LoRA factors included when `lora_rank` > 0; pass
    `filter=LoRAParam` to count only the adapters.
    """
    state = nnx.state(abstract_model(config, lora_rank=lora_rank), filter)
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(state))
