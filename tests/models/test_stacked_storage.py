"""The decoder's layers stored stacked (`set_scan_layers`, models/layer_scan.py) against their
per-layer storage: the same arrays moved, not copied or changed, both ways; the sharding names
one axis longer; adapters stacked with their layers and still what trains; the same logits; an
export identical to the per-layer model's; LoRA refused once stacked."""

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec
from safetensors.numpy import load_file

from sallm_jax.models.hub.export import export_hf
from sallm_jax.models.layer_scan import LayerStack, set_scan_layers
from sallm_jax.models.lora import LoRAParam, apply_lora, trainable_filter
from tests.models.tiny import TINY, padded_batch, random_model

CONFIG = TINY["granite_speech"].config

LAYERS = CONFIG.text.num_hidden_layers


def adapted_model():
    model = apply_lora(random_model(CONFIG), rank=2, alpha=4, rngs=nnx.Rngs(1))
    adapters = nnx.state(model, LoRAParam)
    nnx.update(model, jax.tree.map(lambda x: x + 0.05, adapters))  # lora_b != 0
    return model


def layer_arrays(model) -> dict[tuple, np.ndarray]:
    """Every decoder variable by (layer, path), as NumPy copies."""
    return {(i, path): np.array(variable.get_value())
            for i, layer in enumerate(model.language_model.layers)
            for path, variable in nnx.to_flat_state(nnx.state(layer))}


def logits(model):
    return model(*padded_batch("granite_speech"))


def test_storage_moves_both_ways_without_changing_a_number():
    model = adapted_model()
    before, before_logits = layer_arrays(model), logits(model)
    names_before = nnx.get_partition_spec(nnx.state(model.language_model.layers[0]))

    set_scan_layers(model, True)
    stack = model.language_model.layers
    assert isinstance(stack, LayerStack) and len(stack) == LAYERS
    assert model.language_model.scan_layers
    stored_flat = dict(nnx.to_flat_state(nnx.state(stack.layer)))
    for (i, path), array in before.items():
        stored = stored_flat[path].get_value()
        assert stored.shape == (LAYERS, *array.shape), path
        np.testing.assert_array_equal(stored[i], array)
    specs = dict(nnx.to_flat_state(nnx.get_partition_spec(nnx.state(stack.layer))))
    for path, spec in nnx.to_flat_state(names_before):
        names = spec.get_value()  # P() (unnamed: replicated) stays P()
        assert specs[path].get_value() == (PartitionSpec(None, *names) if names else names), path
    np.testing.assert_allclose(logits(model), before_logits, rtol=1e-5, atol=1e-5)

    set_scan_layers(model, False)
    assert not model.language_model.scan_layers
    after = layer_arrays(model)
    assert after.keys() == before.keys()
    for key, array in before.items():
        np.testing.assert_array_equal(after[key], array)
    assert nnx.get_partition_spec(nnx.state(model.language_model.layers[0])) == names_before


def test_stacked_adapters_are_what_trains():
    model = set_scan_layers(adapted_model(), True)
    trainable = dict(nnx.to_flat_state(nnx.state(model, trainable_filter("adapters"))))
    q_proj = ("language_model", "layers", "layer", "self_attn", "q_proj")
    hidden = CONFIG.text.hidden_size
    assert trainable[(*q_proj, "lora_a")].get_value().shape == (LAYERS, hidden, 2)
    assert all(path[:3] == ("language_model", "layers", "layer") for path in trainable)
    assert len(trainable) == 2 * 2  # lora_a, lora_b on q_proj and v_proj, stacked
    with pytest.raises(ValueError, match="apply it before set_scan_layers"):
        apply_lora(model, rank=2, alpha=4, rngs=nnx.Rngs(2))


def test_export_of_a_stacked_model_equals_the_per_layer_export(tmp_path):
    model = adapted_model()
    export_hf(model, tmp_path / "per_layer", lora="merged")
    set_scan_layers(model, True)
    export_hf(model, tmp_path / "stacked", lora="merged")
    assert isinstance(model.language_model.layers, LayerStack)  # stacked again after
    per_layer = load_file(tmp_path / "per_layer" / "model.safetensors")
    stacked = load_file(tmp_path / "stacked" / "model.safetensors")
    assert stacked.keys() == per_layer.keys()
    assert any(".layers.1." in key for key in stacked)
    for key, array in per_layer.items():
        np.testing.assert_array_equal(stacked[key], array, err_msg=key)


def test_the_stack_reads_layer_by_layer():
    model = random_model(CONFIG)
    kernels = [np.array(layer.mlp.down_proj.kernel[...]) for layer in model.language_model.layers]
    stack = set_scan_layers(model, True).language_model.layers
    for layer, kernel in zip(stack, kernels, strict=True):
        np.testing.assert_array_equal(layer.mlp.down_proj.kernel[...], kernel)
    with pytest.raises(IndexError, match=f"layer {LAYERS} of a stack of {LAYERS}"):
        stack[LAYERS]
