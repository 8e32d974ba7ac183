"""Checkpoint reading and key mapping against what transformers' save_pretrained writes."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from hf_tiny import jax_model, read_tensors  # noqa: E402

from sallm_jax.models.qwen2_audio.hub import (  # noqa: E402
    hf_param_map,
    load_hf_config,
    load_hf_state_dict,
    speech_lm_config_from_hf,
)
from sallm_jax.models.qwen2_audio.model import SpeechLM  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(save_pretrained directory, the transformers model) for a 1+1-layer random model."""
    config = transformers.Qwen2AudioConfig(
        audio_config=dict(
            model_type="qwen2_audio_encoder",
            num_mel_bins=16,
            d_model=32,
            encoder_layers=1,
            encoder_attention_heads=2,
            encoder_ffn_dim=48,
            max_source_positions=30,
        ),
        text_config=dict(
            model_type="qwen2",
            hidden_size=24,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=40,
            vocab_size=50,
            rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 5000.0},
        ),
        audio_token_index=49,
    )
    torch.manual_seed(0)
    model = transformers.Qwen2AudioForConditionalGeneration(config).eval()
    path = tmp_path_factory.mktemp("hf_weights")
    model.save_pretrained(path)
    return path, model


def _abstract(config):
    return nnx.eval_shape(lambda: SpeechLM(config, rngs=nnx.Rngs(0)))


def test_config_json_maps_onto_dataclasses(checkpoint):
    path, _ = checkpoint
    config = load_hf_config(path)
    assert config.audio_token_id == 49
    assert config.text.rope_theta == 5000.0 and config.text.rms_norm_eps == 1e-5
    assert (config.text.num_key_value_heads, config.text.head_dim) == (2, 6)
    assert (config.audio.d_model, config.audio.max_mel_frames) == (32, 60)


def test_4x_config_and_class_defaults():
    config = speech_lm_config_from_hf(
        {"text_config": {"hidden_size": 64, "num_attention_heads": 4, "rope_theta": 1e6}}
    )
    assert config.text.rope_theta == 1e6
    assert config.text.num_key_value_heads == 4  # Qwen2Config: None means num_attention_heads
    assert config.text.rms_norm_eps == 1e-6 and config.text.vocab_size == 151936
    assert config.audio.num_mel_bins == 128 and config.audio_token_id == 151646
    with pytest.raises(NotImplementedError, match="use_sliding_window"):
        speech_lm_config_from_hf({"text_config": {"use_sliding_window": True}})


def test_map_covers_exactly_the_saved_keys_and_converts_layouts(checkpoint):
    path, hf = checkpoint
    tensors = read_tensors(path)
    config = load_hf_config(path)
    assert set(hf_param_map(config)) == set(tensors)
    model = jax_model(path)
    q = model.audio_tower.layers[0].self_attn.q_proj.kernel[...]
    np.testing.assert_array_equal(q, tensors["audio_tower.layers.0.self_attn.q_proj.weight"].T)
    conv = model.audio_tower.conv2.kernel[...]
    np.testing.assert_array_equal(conv, tensors["audio_tower.conv2.weight"].transpose(2, 1, 0))
    # The in-memory 5.x layout (model.*, lm_head.weight) loads to the same parameters.
    in_memory = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    assert "lm_head.weight" in in_memory
    other = load_hf_state_dict(_abstract(config), in_memory)
    for a, b in zip(
        *(nnx.to_flat_state(nnx.state(m, nnx.Param)) for m in (model, other)), strict=True
    ):
        assert a[0] == b[0]
        np.testing.assert_array_equal(a[1][...], b[1][...])


def test_sharded_checkpoint(checkpoint, tmp_path):
    path, _ = checkpoint
    tensors = read_tensors(path)
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2]}
    shards["model-00002-of-00002.safetensors"] = names[1::2]
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(tmp_path / shard))
    index = {"metadata": {}, "weight_map": {k: s for s, ks in shards.items() for k in ks}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    loaded = read_tensors(tmp_path)
    assert set(loaded) == set(tensors)
    for k in names:
        np.testing.assert_array_equal(loaded[k], tensors[k])
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        read_tensors(tmp_path / "missing")


def test_errors_name_every_bad_key(checkpoint):
    path, _ = checkpoint
    config = load_hf_config(path)
    tensors = read_tensors(path)
    tensors.pop("language_model.model.layers.0.mlp.up_proj.weight")
    tensors["audio_tower.extra.weight"] = np.zeros(3, np.float32)
    tensors["multi_modal_projector.linear.weight"] = np.zeros((24, 31), np.float32)
    with pytest.raises(ValueError) as error:
        load_hf_state_dict(_abstract(config), tensors)
    message = str(error.value)
    assert "missing keys: ['language_model.model.layers.0.mlp.up_proj.weight']" in message
    assert "unexpected keys: ['audio_tower.extra.weight']" in message
    assert "shape mismatch for multi_modal_projector.linear.weight" in message


def test_tied_checkpoint_needs_no_lm_head(checkpoint):
    path, _ = checkpoint
    config = load_hf_config(path)
    tied = dataclasses.replace(
        config, text=dataclasses.replace(config.text, tie_word_embeddings=True)
    )
    tensors = read_tensors(path)
    load_hf_state_dict(_abstract(tied), tensors)  # a present lm_head is ignored
    tensors.pop("language_model.lm_head.weight")
    model = load_hf_state_dict(_abstract(tied), tensors)
    assert model.language_model.lm_head is None
    with pytest.raises(ValueError, match="missing keys: \\['language_model.lm_head.weight'\\]"):
        load_hf_state_dict(_abstract(config), tensors)
