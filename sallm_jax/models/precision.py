"""The compute dtype of a built model, changed in place (e.g. `grpo.rollout_dtype`)."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx


def set_compute_dtype(model: nnx.Module, dtype) -> nnx.Module:
    """Makes every module computing in `model.dtype` compute in `dtype`, in place; parameters keep
    their storage dtype (cast at use), layers built at other dtypes keep theirs. Returns `model`."""
    old, new = jnp.dtype(model.dtype), jnp.dtype(dtype)
    for _, module in nnx.iter_modules(model):
        value = getattr(module, "dtype", None)
        if value is not None and not isinstance(value, nnx.Variable) and jnp.dtype(value) == old:
            module.dtype = new
    return model
