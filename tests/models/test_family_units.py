"""Behaviour every registered family's model shares and the parity tests do not pin: the merge
rule, padding, gradients, bfloat16 compute, sharding names and the audio token's range."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sallm_jax.models.families import family_for_config
from tests.models.tiny import (
    AUDIO_ID,
    FAMILY_TYPES,
    TINY,
    forward,
    padded_batch,
    prompt_row,
    random_model,
)

AXIS_NAMES = {
    "embed", "mlp", "heads", "kv_heads", "vocab", "audio_embed", "audio_mlp", "mel",
    "conv_kernel", "pos", None,
}  # fmt: skip

pytestmark = pytest.mark.parametrize("model_type", FAMILY_TYPES, scope="module")


@pytest.fixture(scope="module")
def model(model_type):
    return random_model(TINY[model_type].config)


def test_every_family_has_a_tiny_model(model_type):
    assert model_type in TINY, "add the family's tiny model to tests/models/tiny.py"
    assert family_for_config(TINY[model_type].config).model_type == model_type


def test_embed_puts_kth_placeholder_to_kth_audio_row(model):
    a = AUDIO_ID
    ids = jnp.array([[5, a, a, 7, a], [a, a, 3, 4, 6]], jnp.int32)
    audio = jnp.arange(2 * 3 * 32, dtype=jnp.float32).reshape(2, 3, 32) + 1000.0
    out = np.asarray(model.embed(ids, audio))
    table = np.asarray(model.language_model.embed_tokens.embedding[...])
    expected = table[np.asarray(ids)]
    expected[0, 1], expected[0, 2], expected[0, 4] = audio[0, 0], audio[0, 1], audio[0, 2]
    expected[1, 0], expected[1, 1] = audio[1, 0], audio[1, 1]
    np.testing.assert_array_equal(out, expected)  # raw rows: no multiplier here


def test_padding_does_not_change_logits(model, model_type):
    """A row's logits do not depend on left padding before it or right padding after it."""
    logits = np.asarray(forward(model, *padded_batch(model_type)))
    assert np.isfinite(logits).all()
    length = len(prompt_row(model_type))
    np.testing.assert_allclose(logits[0, 3:], logits[1, :length], atol=1e-5, rtol=0)


def test_padding_gives_finite_gradients_and_no_batch_stat_gradients(model, model_type):
    ids, mask, features, lengths = padded_batch(model_type)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params, rest):
        logits = nnx.merge(graphdef, params, rest)(ids, mask, features, lengths)
        return jnp.sum(jax.nn.log_softmax(logits)[..., 0] * mask)

    value, grads = jax.jit(jax.value_and_grad(loss))(params, rest)
    assert np.isfinite(value)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    # What is not a parameter is a BatchNorm statistic, outside what the gradient reaches.
    assert all(isinstance(v, nnx.BatchStat) for _, v in nnx.to_flat_state(rest))


def test_bfloat16_compute_tracks_float32(model, model_type):
    tiny = TINY[model_type]
    bf16_model = random_model(tiny.config, dtype=jnp.bfloat16)  # the same draws
    args = padded_batch(model_type)
    bf16 = forward(bf16_model, *args)
    assert bf16.dtype == jnp.float32
    assert bf16_model.language_model.layers[0].mlp.up_proj.kernel.dtype == jnp.float32
    f32 = forward(model, *args)
    valid = np.asarray(args[1], bool)
    np.testing.assert_allclose(np.asarray(bf16)[valid], np.asarray(f32)[valid],
                               atol=tiny.bfloat16_atol, rtol=0)


def test_parameters_carry_logical_axis_names(model_type):
    config = TINY[model_type].config
    model_class = family_for_config(config).model_class
    model = nnx.eval_shape(lambda: model_class(config, rngs=nnx.Rngs(0)))
    specs = nnx.to_pure_dict(nnx.get_partition_spec(nnx.state(model, nnx.Param)))
    leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    assert leaves and all(set(spec) <= AXIS_NAMES for spec in leaves)
    lm = specs["language_model"]
    assert tuple(lm["embed_tokens"]["embedding"]) == ("vocab", "embed")
    assert tuple(lm["layers"][0]["self_attn"]["k_proj"]["kernel"]) == ("embed", "kv_heads")


def test_rejects_audio_token_outside_vocabulary(model_type):
    config = TINY[model_type].config
    vocab = config.text.vocab_size
    with pytest.raises(ValueError, match=f"audio_token_id={vocab} lies outside"):
        family_for_config(config).model_class(
            dataclasses.replace(config, audio_token_id=vocab), rngs=nnx.Rngs(0)
        )
