"""The compute dtype of a built model, changed in place (a rollout at another precision than
the trainer's, `grpo.rollout_dtype`)."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx


def set_compute_dtype(model: nnx.Module, dtype) -> nnx.Module:
    """Every module of `model` that computes in the model's dtype (`model.dtype`) computes in
    `dtype` instead; the parameters keep their storage dtype and are cast at each use. The
    result computes what the model's constructor given `dtype=dtype` and these parameters
    computes (the layers it builds at other dtypes keep them). Returns `model`."""
    old, new = jnp.dtype(model.dtype), jnp.dtype(dtype)
    for _, module in nnx.iter_modules(model):
        value = getattr(module, "dtype", None)
        if value is not None and not isinstance(value, nnx.Variable) and jnp.dtype(value) == old:
            module.dtype = new
    return model
