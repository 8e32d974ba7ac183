"""Every registered family's export round trip: load with a LoRA adapter in the released
checkpoints' key layout -> export merged or as an adapter -> transformers loads it -> the same
logits as the adapter merged by hand in torch; and back into sallm_jax."""

from __future__ import annotations

import json

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sallm_jax.commands import parity  # noqa: E402
from sallm_jax.models.hub.export import export_hf, hf_config_dict  # noqa: E402
from sallm_jax.models.hub.load import load_checkpoint  # noqa: E402
from tests.models.hf_tiny import (  # noqa: E402
    adapter_shapes,
    batch,
    hf_class,
    hf_logits,
    merge_adapter_by_hand,
    save_checkpoint,
    write_adapter,
)
from tests.models.tiny import FAMILY_TYPES, forward  # noqa: E402

TOL = 1e-4
RANK, ALPHA = 4, 8.0


@pytest.fixture(scope="module", params=FAMILY_TYPES)
def source(request, tmp_path_factory):
    """(model_type, checkpoint dir, adapter dir, inputs, logits of the adapter merged by hand)."""
    model_type = request.param
    path = tmp_path_factory.mktemp(f"{model_type}_source")
    hf = save_checkpoint(path, model_type)
    adapter = tmp_path_factory.mktemp(f"{model_type}_adapter")
    torch.manual_seed(2)
    write_adapter(adapter, adapter_shapes(hf.config.text_config), rank=RANK, alpha=ALPHA)
    inputs = batch(model_type)
    base_logits = hf_logits(hf, *inputs)
    merge_adapter_by_hand(hf, adapter)  # the formula, applied in torch
    adapted_logits = hf_logits(hf, *inputs)
    valid = inputs[3].astype(bool)
    assert np.abs(adapted_logits - base_logits)[valid].max() > 0.1  # the adapter shows
    return model_type, path, adapter, inputs, adapted_logits


def _ours(model, inputs):
    features, lengths, input_ids, attention_mask = map(jnp.asarray, inputs)
    return np.asarray(forward(model, input_ids, attention_mask, features, lengths))


def _hf(model_type, path):
    return hf_class(model_type).from_pretrained(path, dtype=torch.float32).eval()


def test_config_dict_inverts_config_from_hf(source):
    _, path, _, _, _ = source
    checkpoint = load_checkpoint(path)
    config = checkpoint.model.config
    assert checkpoint.family.config_from_hf(hf_config_dict(config)) == config


@pytest.mark.parametrize("form", ["merged", "adapter"])
def test_export_round_trip_through_transformers(source, tmp_path, form):
    model_type, path, adapter, inputs, adapted_logits = source
    checkpoint = load_checkpoint(path, adapter_dir=adapter)
    assert checkpoint.family.model_type == model_type
    ours = _ours(checkpoint.model, inputs)
    valid = inputs[3].astype(bool)
    np.testing.assert_allclose(ours[valid], adapted_logits[valid], atol=TOL, rtol=0)

    export_hf(checkpoint.model, tmp_path, lora=form, source_dir=path)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors"} <= files
    assert ("adapter_model.safetensors" in files) == (form == "adapter")
    if form == "adapter":
        pytest.importorskip("peft")
        config = json.loads((tmp_path / "adapter_config.json").read_text())
        assert (config["r"], config["lora_alpha"]) == (RANK, ALPHA)
        keys = sorted(load_file(tmp_path / "adapter_model.safetensors"))
        assert keys[0] == (
            "base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_A.weight"
        )
    hf = _hf(model_type, tmp_path)
    if form == "adapter":
        # transformers' PEFT integration finds adapter_config.json beside the weights and loads
        # the adapter on top of the base model, as for the released Granite Speech checkpoints.
        assert list(hf.peft_config) == ["default"]
    theirs = hf_logits(hf, *inputs)
    np.testing.assert_allclose(theirs[valid], adapted_logits[valid], atol=TOL, rtol=0)
    np.testing.assert_allclose(theirs[valid], ours[valid], atol=TOL, rtol=0)
    # And back into sallm_jax, the adapter picked up from the directory itself.
    again = load_checkpoint(tmp_path)
    assert again.model.config == checkpoint.model.config
    np.testing.assert_allclose(_ours(again.model, inputs)[valid], ours[valid], atol=TOL, rtol=0)
    if form == "merged":  # the parity command's API agrees on the export
        diff, positions = parity.max_logit_difference(tmp_path)
        mask = parity.parity_inputs(again).attention_mask
        assert diff < TOL and positions == mask.sum()


def test_sharded_bfloat16_export(source, tmp_path):
    model_type, path, adapter, inputs, adapted_logits = source
    model = load_checkpoint(path, adapter_dir=adapter).model
    export_hf(model, tmp_path, dtype=jnp.bfloat16, max_shard_bytes=100_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and shards[0].endswith(f"-of-{len(shards):05d}.safetensors")
    tensors = load_file(tmp_path / shards[0])
    assert {t.dtype for t in tensors.values()} == {np.dtype(ml_dtypes.bfloat16)}
    hf = _hf(model_type, tmp_path)
    valid = inputs[3].astype(bool)
    # bf16 weights: equal to the float32 model to bf16 rounding of the weights, no better.
    theirs = hf_logits(hf, *inputs)
    assert np.abs(theirs[valid] - adapted_logits[valid]).max() < 0.1
    ours = _ours(load_checkpoint(tmp_path).model, inputs)
    np.testing.assert_allclose(theirs[valid], ours[valid], atol=TOL, rtol=0)
