"""Qwen2-Audio checkpoint reading where it differs from other families: config mapping, class
defaults, layouts and a tied head. What every family shares is in test_family_weights.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sallm_jax.models.qwen2_audio.hub import (  # noqa: E402
    load_hf_config,
    load_hf_state_dict,
    speech_lm_config_from_hf,
)
from sallm_jax.models.qwen2_audio.model import Qwen2AudioLM  # noqa: E402
from tests.models.hf_tiny import jax_model, read_tensors, save_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """The save_pretrained directory of the tiny random model."""
    path = tmp_path_factory.mktemp("hf_weights")
    save_checkpoint(path, "qwen2_audio")
    return path


def _abstract(config):
    return nnx.eval_shape(lambda: Qwen2AudioLM(config, rngs=nnx.Rngs(0)))


def test_config_json_maps_onto_dataclasses(checkpoint):
    config = load_hf_config(checkpoint)
    assert config.audio_token_id == 299
    assert config.text.rope_theta == 5000.0 and config.text.rms_norm_eps == 1e-5
    assert (config.text.num_key_value_heads, config.text.head_dim) == (2, 16)
    assert (config.audio.d_model, config.audio.max_mel_frames) == (64, 200)


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


def test_layouts_are_converted(checkpoint):
    tensors = read_tensors(checkpoint)
    model = jax_model(checkpoint)
    q = model.audio_tower.layers[0].self_attn.q_proj.kernel[...]
    np.testing.assert_array_equal(q, tensors["audio_tower.layers.0.self_attn.q_proj.weight"].T)
    conv = model.audio_tower.conv2.kernel[...]
    np.testing.assert_array_equal(conv, tensors["audio_tower.conv2.weight"].transpose(2, 1, 0))


def test_tied_checkpoint_needs_no_lm_head(checkpoint):
    config = load_hf_config(checkpoint)
    tied = dataclasses.replace(
        config, text=dataclasses.replace(config.text, tie_word_embeddings=True)
    )
    tensors = read_tensors(checkpoint)
    load_hf_state_dict(_abstract(tied), tensors)  # a present lm_head is ignored
    tensors.pop("language_model.lm_head.weight")
    model = load_hf_state_dict(_abstract(tied), tensors)
    assert model.language_model.lm_head is None
    with pytest.raises(ValueError, match="missing keys: \\['language_model.lm_head.weight'\\]"):
        load_hf_state_dict(_abstract(config), tensors)
