"""Mixed precision: float32 storage with bfloat16 compute is exactly bfloat16 storage's
forward pass (each weight is rounded once, at its use), and LoRA adapters stay float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sallm_jax.models.granite_speech.encoder import InferenceBatchNorm
from sallm_jax.models.lora import apply_lora
from tests.models.tiny import FAMILY_TYPES, TINY, forward, padded_batch, random_model


def stored_as_bfloat16(model_type):
    """The family's random model with its parameters stored in bfloat16 (the same draws)."""
    model = random_model(TINY[model_type].config, dtype=jnp.bfloat16)
    params = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda x: x.astype(jnp.bfloat16), params))
    return model


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_float32_master_weights_compute_as_bfloat16_storage(model_type):
    mixed = random_model(TINY[model_type].config, dtype=jnp.bfloat16)  # float32 parameters
    assert {x.dtype for x in jax.tree.leaves(nnx.state(mixed, nnx.Param))} == {np.dtype(np.float32)}
    # Granite's BatchNorm computes in float32 from its float32 scale and bias by design; give
    # it the values bfloat16 storage holds, so that only the compute path differs.
    for _, norm in nnx.iter_modules(mixed):
        if isinstance(norm, InferenceBatchNorm):
            for param in (norm.scale, norm.bias):
                param.set_value(param.get_value().astype(jnp.bfloat16).astype(jnp.float32))
    args = padded_batch(model_type)
    np.testing.assert_array_equal(np.asarray(forward(mixed, *args)),
                                  np.asarray(forward(stored_as_bfloat16(model_type), *args)))


def test_lora_adapters_are_float32_master_weights_over_bfloat16_storage():
    model = apply_lora(stored_as_bfloat16("qwen2_audio"), rank=4, alpha=8, rngs=nnx.Rngs(1))
    q_proj = model.language_model.layers[0].self_attn.q_proj
    assert q_proj.base.kernel.get_value().dtype == jnp.bfloat16
    assert q_proj.lora_a.get_value().dtype == q_proj.lora_b.get_value().dtype == jnp.float32
    assert np.isfinite(np.asarray(forward(model, *padded_batch("qwen2_audio")))).all()
