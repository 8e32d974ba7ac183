"""The layer scan (models/layer_scan.py) over the audio encoders' layers against their unrolled
loops: the Granite conformer (split around its self-conditioning CTC step, with an odd and an
even number of blocks) and Qwen2-Audio's Whisper encoder (with clips of different lengths), in
outputs and in gradients of the encoder's parameters, with the layers stored stacked."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sallm_jax.models.families import family_for_config
from sallm_jax.models.layer_scan import set_scan_layers
from sallm_jax.models.lora import apply_lora
from tests.models.tiny import FAMILY_TYPES, TINY, random_model

GRANITE, QWEN2_AUDIO = TINY["granite_speech"].config, TINY["qwen2_audio"].config


def assert_scan_equals_loop(encoder: nnx.Module, *inputs) -> None:
    """Outputs and parameter gradients of `encoder(*inputs)` equal with the scan on and off,
    and only the scanned program holds a scan."""
    graphdef, params, rest = nnx.split(encoder, nnx.Param, ...)

    def run(params, scan):
        model = set_scan_layers(nnx.merge(graphdef, params, rest), scan)
        out = model(*inputs)
        return jnp.sum(jnp.sin(3.0 * out)), out  # a loss whose gradient varies over out

    results = {}
    for scan in (False, True):
        results[scan] = jax.jit(jax.value_and_grad(lambda p, s=scan: run(p, s), has_aux=True))(
            params
        )
        jaxpr = str(jax.make_jaxpr(lambda p, s=scan: run(p, s))(params))
        assert ("scan" in jaxpr) == scan
        # Stored stacked, the scanned encoder's program stacks no weights of its own.
        assert "stack[" not in jaxpr and "concatenate" not in jaxpr
    (loss_loop, out_loop), grad_loop = results[False]
    (loss_scan, out_scan), grad_scan = results[True]
    np.testing.assert_allclose(out_scan, out_loop, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss_scan, loss_loop, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grad_scan), jax.tree.leaves(grad_loop), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert sum(float(np.abs(g).max()) > 0 for g in jax.tree.leaves(grad_loop)) > 10


@pytest.mark.parametrize("num_layers", [1, 3, 4])
def test_granite_conformer_scan_equals_the_loop(num_layers):
    encoder_config = dataclasses.replace(GRANITE.encoder, num_layers=num_layers)
    config = dataclasses.replace(GRANITE, encoder=encoder_config)
    encoder = random_model(config).encoder
    features = jax.random.normal(jax.random.key(2), (2, 12, encoder_config.input_dim))
    assert_scan_equals_loop(encoder, features)


def test_whisper_encoder_scan_equals_the_loop():
    audio = dataclasses.replace(QWEN2_AUDIO.audio, encoder_layers=3)
    config = dataclasses.replace(QWEN2_AUDIO, audio=audio)
    encoder = random_model(config).audio_tower
    features = jax.random.normal(jax.random.key(2), (2, 16, audio.num_mel_bins))
    assert_scan_equals_loop(encoder, features, jnp.array([16, 9], jnp.int32))


def family_model(model_type: str) -> tuple[nnx.Module, nnx.Module]:
    """(the family's tiny random model, its audio encoder)."""
    config = TINY[model_type].config
    model = random_model(config)
    return model, getattr(model, family_for_config(config).encoder)


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_set_scan_layers_reaches_the_encoders(model_type):
    model, encoder = family_model(model_type)
    set_scan_layers(model, True)
    assert encoder.scan_layers and model.language_model.scan_layers
    set_scan_layers(model, False)
    assert not encoder.scan_layers


def test_encoder_layers_of_different_structure_cannot_scan():
    encoder_config = dataclasses.replace(GRANITE.encoder, num_layers=4)
    config = dataclasses.replace(GRANITE, encoder=encoder_config)
    encoder = random_model(config).encoder
    apply_lora(encoder.layers[3], rank=2, alpha=4, target_modules=("to_q",), rngs=nnx.Rngs(1),
               scope=None)
    with pytest.raises(ValueError, match="audio encoder layer 3 differs in structure from "
                                         "layer 0"):
        set_scan_layers(encoder, True)


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_scanned_encoders_hold_their_layers_stacked(model_type):
    """With the scan on, an encoder's layers are one stack of stored variables (no program
    builds a copy): every leaf has a leading axis of the number of layers, and the values
    are the per-layer ones."""
    model, encoder = family_model(model_type)
    per_layer = [jax.tree.map(np.asarray, nnx.state(layer)) for layer in encoder.layers]
    set_scan_layers(model, True)
    stacked = nnx.state(encoder.layers)
    for index, expected in enumerate(per_layer):
        got = jax.tree.map(lambda leaf, i=index: np.asarray(leaf[i]), stacked["layer"])
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
            np.testing.assert_array_equal(a, b)
    assert {leaf.shape[0] for leaf in jax.tree.leaves(stacked)} == {len(per_layer)}
