"""Export round trip: load -> (adapt) -> export -> transformers loads it -> the same logits."""

from __future__ import annotations

import json

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from hf_tiny import (  # noqa: E402
    AUDIO_ID,
    hf_logits,
    merged_qwen2_audio,
    qwen2_audio_inputs,
    save_peft_adapter,
    save_qwen2_audio,
)

from sallm_jax.models.hub.export import export_hf, hf_config_dict  # noqa: E402
from sallm_jax.models.hub.load import load_checkpoint  # noqa: E402
from sallm_jax.models.qwen2_audio.hub import speech_lm_config_from_hf  # noqa: E402

TOL = 1e-4
forward = nnx.jit(lambda model, *args: model(*args))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """(checkpoint dir with tokenizer + preprocessor files, adapter dir, inputs, adapted logits)."""
    path = tmp_path_factory.mktemp("export_source")
    save_qwen2_audio(path, with_processor_files=True)
    adapter = tmp_path_factory.mktemp("export_adapter")
    save_peft_adapter(adapter, rank=4, alpha=8.0)
    inputs = qwen2_audio_inputs()
    return path, adapter, inputs, hf_logits(merged_qwen2_audio(adapter), *inputs)


def _ours(model, inputs):
    features, lengths, input_ids, attention_mask = map(jnp.asarray, inputs)
    return np.asarray(forward(model, input_ids, attention_mask, features, lengths))


def _hf(path):
    return transformers.Qwen2AudioForConditionalGeneration.from_pretrained(
        path, dtype=torch.float32
    ).eval()


def test_load_checkpoint_returns_tokenizer_and_processor_settings(source):
    path, _, _, _ = source
    checkpoint = load_checkpoint(path, dtype="bfloat16")
    settings = checkpoint.processor
    assert (settings.num_mel_bins, settings.feature_size, settings.sampling_rate) == (80, 80, 16000)
    assert (settings.audio_token, settings.audio_token_id) == ("<|AUDIO|>", AUDIO_ID)
    assert settings.chat_template.startswith("{% for m in messages %}")
    assert checkpoint.tokenizer.convert_tokens_to_ids("<|AUDIO|>") == AUDIO_ID
    kernel = checkpoint.model.language_model.layers[0].self_attn.q_proj.kernel
    assert kernel.get_value().dtype == jnp.bfloat16
    stored = load_file(path / "model.safetensors")[
        "language_model.model.layers.0.self_attn.q_proj.weight"
    ]
    np.testing.assert_array_equal(kernel[...], stored.T.astype(ml_dtypes.bfloat16))
    assert checkpoint.family.model_type == "qwen2_audio"


def test_config_dict_inverts_config_from_hf(source):
    path, _, _, _ = source
    model = load_checkpoint(path).model
    assert speech_lm_config_from_hf(hf_config_dict(model.config)) == model.config


@pytest.mark.parametrize("form", ["merged", "adapter"])
def test_export_round_trip_through_transformers(source, tmp_path, form):
    path, adapter, inputs, adapted_logits = source
    model = load_checkpoint(path, adapter_dir=adapter).model
    ours = _ours(model, inputs)
    valid = inputs[3].astype(bool)
    np.testing.assert_allclose(ours[valid], adapted_logits[valid], atol=TOL, rtol=0)

    export_hf(model, tmp_path, lora=form, source_dir=path)
    files = {p.name for p in tmp_path.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "preprocessor_config.json",
    } <= files
    assert ("adapter_model.safetensors" in files) == (form == "adapter")
    hf = _hf(tmp_path)
    if form == "adapter":
        pytest.importorskip("peft")
        config = json.loads((tmp_path / "adapter_config.json").read_text())
        assert (config["r"], config["lora_alpha"]) == (4, 8.0)
        keys = sorted(load_file(tmp_path / "adapter_model.safetensors"))
        assert keys[0] == (
            "base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_A.weight"
        )
        # transformers' PEFT integration finds adapter_config.json beside the weights and loads
        # the adapter on top of the base model, as for the released Granite Speech checkpoints.
        assert list(hf.peft_config) == ["default"]
    theirs = hf_logits(hf, *inputs)
    np.testing.assert_allclose(theirs[valid], ours[valid], atol=TOL, rtol=0)
    # And back into sallm_jax, the adapter picked up from the directory itself.
    again = load_checkpoint(tmp_path)
    assert again.tokenizer is not None
    np.testing.assert_allclose(_ours(again.model, inputs)[valid], ours[valid], atol=TOL, rtol=0)


def test_sharded_bfloat16_export(source, tmp_path):
    path, adapter, inputs, adapted_logits = source
    model = load_checkpoint(path, adapter_dir=adapter).model
    export_hf(model, tmp_path, dtype=jnp.bfloat16, max_shard_bytes=100_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and shards[0].endswith(f"-of-{len(shards):05d}.safetensors")
    tensors = load_file(tmp_path / shards[0])
    assert {t.dtype for t in tensors.values()} == {np.dtype(ml_dtypes.bfloat16)}
    hf = _hf(tmp_path)
    valid = inputs[3].astype(bool)
    # bf16 weights: equal to the float32 model to bf16 rounding of the weights, no better.
    theirs = hf_logits(hf, *inputs)
    assert np.abs(theirs[valid] - adapted_logits[valid]).max() < 0.1
    ours = _ours(load_checkpoint(tmp_path).model, inputs)
    np.testing.assert_allclose(theirs[valid], ours[valid], atol=TOL, rtol=0)
