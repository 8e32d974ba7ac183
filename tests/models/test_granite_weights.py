"""Granite Speech checkpoint reading where it differs from other families: config mapping,
class defaults, layouts, BatchNorm statistics and tied heads. What every family shares is in
test_family_weights.py."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sallm_jax.models.abstract import count_params  # noqa: E402
from sallm_jax.models.granite_speech.config import (  # noqa: E402
    GraniteEncoderConfig,
    GraniteSpeechConfig,
)
from sallm_jax.models.granite_speech.hub import (  # noqa: E402
    granite_speech_config_from_hf,
    load_granite_config,
    load_granite_state_dict,
)
from sallm_jax.models.granite_speech.model import GraniteSpeechLM  # noqa: E402
from tests.models.hf_tiny import (  # noqa: E402
    granite_speech_config,
    jax_model,
    read_tensors,
    save_checkpoint,
)
from tests.models.tiny import TINY  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(save_pretrained directory, the transformers model) for the tiny model, untied."""
    path = tmp_path_factory.mktemp("granite_weights")
    return path, save_checkpoint(path, "granite_speech", tie_word_embeddings=False)


def _abstract(config):
    return nnx.eval_shape(lambda: GraniteSpeechLM(config, rngs=nnx.Rngs(0)))


def test_config_json_maps_onto_dataclasses(checkpoint):
    path, _ = checkpoint
    config = load_granite_config(path)
    assert config.audio_token_id == 99
    assert (config.window_size, config.downsample_rate, config.num_queries) == (15, 5, 3)
    assert config.encoder.dim_head == 8  # not set: hidden_dim // num_heads
    assert (config.encoder.input_dim, config.encoder.conv_kernel_size) == (160, 4)
    assert config.projector.cross_attention_frequency == 2
    assert config.projector.layer_norm_eps == 1e-12
    text = config.text
    assert text.rope_theta == 5000.0 and text.num_key_value_heads == 2 and text.head_dim == 8
    assert (text.embedding_multiplier, text.attention_multiplier) == (3.0, 0.3)
    assert (text.residual_multiplier, text.logits_scaling) == (0.5, 4.0)
    assert not text.tie_word_embeddings and not text.apply_logits_scaling
    assert load_granite_config(path, apply_logits_scaling=True).text.apply_logits_scaling


def test_4x_config_and_class_defaults():
    config = granite_speech_config_from_hf(
        {
            # Encoder fields spelt by transformers' attribute_map aliases.
            "encoder_config": {"hidden_size": 64, "num_attention_heads": 4},
            "text_config": {"hidden_size": 64, "num_attention_heads": 4, "rope_theta": 1e7},
        }
    )
    assert config.text.rope_theta == 1e7
    assert config.text.num_key_value_heads == 4  # GraniteConfig: None means num_attention_heads
    assert config.text.tie_word_embeddings  # GraniteSpeechConfig's top-level default
    assert config.text.vocab_size == 32000 and config.text.rms_norm_eps == 1e-6
    assert (config.encoder.hidden_dim, config.encoder.num_heads, config.encoder.dim_head) == (
        64,
        4,
        16,
    )
    assert config.encoder.num_layers == 10 and config.encoder.context_size == 200
    assert config.projector.hidden_size == 768 and config.projector.cross_attention_frequency == 2
    assert config.audio_token_id == 49155
    for bad, match in (
        ({"text_config": {"attention_bias": True}}, "attention_bias"),
        ({"projector_config": {"use_qformer_text_input": True}}, "use_qformer_text_input"),
        ({"text_config": {"rope_parameters": {"rope_type": "linear"}}}, "rope_type"),
        ({"text_config": {"rope_scaling": {"type": "linear", "factor": 2.0}}}, "rope_scaling"),
        ({"projector_config": {"hidden_act": "relu"}}, "hidden_act"),
    ):
        with pytest.raises(NotImplementedError, match=match):
            granite_speech_config_from_hf(bad)
    with pytest.raises(ValueError, match="context_size"):
        GraniteEncoderConfig(context_size=600, max_pos_emb=512)


def test_layouts_and_batch_norm_statistics(checkpoint):
    path, hf = checkpoint
    tensors = read_tensors(path)
    model = jax_model(path)
    layer = model.encoder.layers[0]
    np.testing.assert_array_equal(
        layer.attn.to_kv.kernel[...], tensors["encoder.layers.0.attn.to_kv.weight"].T
    )
    depth = tensors["encoder.layers.0.conv.depth_conv.conv.weight"]  # [out, 1, k]
    assert layer.conv.depth_conv.kernel.shape == (4, 1, 64)  # inner = 32 * 2
    np.testing.assert_array_equal(layer.conv.depth_conv.kernel[...], depth.transpose(2, 1, 0))
    np.testing.assert_array_equal(
        layer.conv.up_conv.kernel[...],
        tensors["encoder.layers.0.conv.up_conv.weight"].transpose(2, 1, 0),
    )
    bn = layer.conv.batch_norm
    np.testing.assert_array_equal(
        bn.mean[...], tensors["encoder.layers.0.conv.batch_norm.running_mean"]
    )
    np.testing.assert_array_equal(
        bn.var[...], tensors["encoder.layers.0.conv.batch_norm.running_var"]
    )
    # Running statistics are state, not parameters: an optimiser over nnx.Param never sees them.
    assert isinstance(bn.mean, nnx.BatchStat) and isinstance(bn.var, nnx.BatchStat)
    param_paths = {p for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert not any("mean" in p or "var" in p for p in param_paths)
    blocks = model.config.encoder.num_layers
    assert len(nnx.to_flat_state(nnx.state(model, nnx.BatchStat))) == 2 * blocks == 6
    np.testing.assert_array_equal(
        model.language_model.lm_head.kernel[...], tensors["language_model.lm_head.weight"].T
    )
    in_memory = hf.state_dict()
    assert "lm_head.weight" in in_memory and "model.encoder.input_linear.weight" in in_memory


def test_a_missing_batch_norm_statistic_is_named(checkpoint):
    path, _ = checkpoint
    config = load_granite_config(path)
    tensors = read_tensors(path)
    tensors.pop("encoder.layers.0.conv.batch_norm.running_var")
    with pytest.raises(ValueError) as error:
        load_granite_state_dict(_abstract(config), tensors, source="ckpt")
    assert "missing keys: ['encoder.layers.0.conv.batch_norm.running_var']" in str(error.value)


def test_tied_checkpoint(checkpoint):
    path, _ = checkpoint
    config = load_granite_config(path)
    tied = dataclasses.replace(
        config, text=dataclasses.replace(config.text, tie_word_embeddings=True)
    )
    tensors = read_tensors(path)
    # An lm_head that differs from the embeddings cannot be dropped silently.
    with pytest.raises(ValueError, match="differs from language_model.model.embed_tokens"):
        load_granite_state_dict(_abstract(tied), tensors)
    tensors["language_model.lm_head.weight"] = tensors["language_model.model.embed_tokens.weight"]
    load_granite_state_dict(_abstract(tied), tensors)  # an identical copy is ignored
    tensors.pop("language_model.lm_head.weight")
    model = load_granite_state_dict(_abstract(tied), tensors)
    assert model.language_model.lm_head is None
    with pytest.raises(ValueError, match="missing keys: \\['language_model.lm_head.weight'\\]"):
        load_granite_state_dict(_abstract(config), tensors)


def test_default_tie_follows_the_speech_wrapper(tmp_path):
    """5.23 ties the head by the top-level flag (default true), whatever text_config says."""
    torch.manual_seed(0)
    hf = transformers.GraniteSpeechForConditionalGeneration(granite_speech_config())
    assert hf.config.text_config.tie_word_embeddings is False
    assert hf.lm_head.weight.data_ptr() == hf.model.language_model.embed_tokens.weight.data_ptr()
    hf.save_pretrained(tmp_path)
    assert "language_model.lm_head.weight" not in read_tensors(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["tie_word_embeddings"] is True
    model = jax_model(tmp_path)
    assert model.language_model.lm_head is None
    assert count_params(model.config) == sum(p.numel() for p in hf.parameters())


def test_model_rejects_a_projector_that_does_not_take_the_encoder():
    """The projector's default width does not take the tiny encoder's output (an audio token
    outside the vocabulary: test_family_units.py)."""
    tiny = TINY["granite_speech"].config
    default_projector = GraniteSpeechConfig(encoder=tiny.encoder, text=tiny.text,
                                            audio_token_id=tiny.audio_token_id)
    with pytest.raises(ValueError, match="encoder_hidden_size=1408"):
        _abstract(default_projector)
