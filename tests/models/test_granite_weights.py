"""Granite Speech checkpoint reading: config mapping, key table, layouts and error messages."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from hf_tiny import jax_model, read_tensors  # noqa: E402

from sallm_jax.models.abstract import count_params  # noqa: E402
from sallm_jax.models.granite_speech.config import (  # noqa: E402
    GraniteEncoderConfig,
    GraniteSpeechConfig,
    GraniteTextConfig,
)
from sallm_jax.models.granite_speech.hub import (  # noqa: E402
    granite_param_map,
    granite_speech_config_from_hf,
    load_granite_config,
    load_granite_state_dict,
)
from sallm_jax.models.granite_speech.model import GraniteSpeechLM  # noqa: E402


def _hf_config(**top):
    return transformers.GraniteSpeechConfig(
        encoder_config=dict(
            num_layers=1,
            hidden_dim=16,
            feedforward_mult=2,
            num_heads=2,
            output_dim=6,
            context_size=4,
            max_pos_emb=6,
            conv_kernel_size=3,
        ),
        projector_config=dict(
            model_type="blip_2_qformer",
            hidden_size=8,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=12,
            encoder_hidden_size=16,
            cross_attention_frequency=1,
        ),
        text_config=dict(
            model_type="granite",
            hidden_size=12,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            intermediate_size=20,
            vocab_size=30,
            embedding_multiplier=12.0,
            attention_multiplier=0.125,
            residual_multiplier=0.22,
            logits_scaling=8.0,
            rope_parameters={"rope_type": "default", "rope_theta": 5000.0},
        ),
        audio_token_index=29,
        has_lora_adapter=False,
        **top,
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(save_pretrained directory, the transformers model) for an untied 1-layer model."""
    torch.manual_seed(0)
    model = transformers.GraniteSpeechForConditionalGeneration(
        _hf_config(tie_word_embeddings=False)
    ).eval()
    with torch.no_grad():
        bn = model.model.encoder.layers[0].conv.batch_norm
        bn.running_mean.copy_(torch.randn_like(bn.running_mean))
        bn.running_var.copy_(1.0 + torch.rand_like(bn.running_var))
    path = tmp_path_factory.mktemp("granite_weights")
    model.save_pretrained(path)
    return path, model


def _abstract(config):
    return nnx.eval_shape(lambda: GraniteSpeechLM(config, rngs=nnx.Rngs(0)))


def test_config_json_maps_onto_dataclasses(checkpoint):
    path, _ = checkpoint
    config = load_granite_config(path)
    assert config.audio_token_id == 29
    assert (config.window_size, config.downsample_rate, config.num_queries) == (15, 5, 3)
    assert config.encoder.dim_head == 8  # None in the file: hidden_dim // num_heads
    assert (config.encoder.input_dim, config.encoder.conv_kernel_size) == (160, 3)
    assert config.projector.cross_attention_frequency == 1
    assert config.projector.layer_norm_eps == 1e-12
    text = config.text
    assert text.rope_theta == 5000.0 and text.num_key_value_heads == 1 and text.head_dim == 6
    assert (text.embedding_multiplier, text.attention_multiplier) == (12.0, 0.125)
    assert (text.residual_multiplier, text.logits_scaling) == (0.22, 8.0)
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


def test_map_covers_exactly_the_saved_keys_and_converts_layouts(checkpoint):
    path, hf = checkpoint
    tensors = read_tensors(path)
    config = load_granite_config(path)
    saved = {k for k in tensors if not k.endswith("num_batches_tracked")}
    assert set(granite_param_map(config)) == saved
    assert "language_model.lm_head.weight" in saved
    model = jax_model(path)
    layer = model.encoder.layers[0]
    np.testing.assert_array_equal(
        layer.attn.to_kv.kernel[...], tensors["encoder.layers.0.attn.to_kv.weight"].T
    )
    depth = tensors["encoder.layers.0.conv.depth_conv.conv.weight"]  # [out, 1, k]
    assert layer.conv.depth_conv.kernel.shape == (3, 1, 32)  # inner = 16 * 2
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
    assert len(nnx.to_flat_state(nnx.state(model, nnx.BatchStat))) == 2
    np.testing.assert_array_equal(
        model.language_model.lm_head.kernel[...], tensors["language_model.lm_head.weight"].T
    )
    assert count_params(config) == sum(p.numel() for p in hf.parameters())
    # The in-memory 5.x layout (model.*, lm_head.weight) loads to the same variables.
    in_memory = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    assert "lm_head.weight" in in_memory and "model.encoder.input_linear.weight" in in_memory
    other = load_granite_state_dict(_abstract(config), in_memory)
    for a, b in zip(*(nnx.to_flat_state(nnx.state(m)) for m in (model, other)), strict=True):
        assert a[0] == b[0]
        np.testing.assert_array_equal(a[1][...], b[1][...])


def test_errors_name_every_bad_key(checkpoint):
    path, _ = checkpoint
    config = load_granite_config(path)
    tensors = read_tensors(path)
    tensors.pop("encoder.layers.0.conv.batch_norm.running_var")
    tensors["projector.extra.weight"] = np.zeros(3, np.float32)
    tensors["projector.linear.weight"] = np.zeros((12, 9), np.float32)
    with pytest.raises(ValueError) as error:
        load_granite_state_dict(_abstract(config), tensors, source="ckpt")
    message = str(error.value)
    assert "cannot load ckpt into GraniteSpeechLM" in message
    assert "missing keys: ['encoder.layers.0.conv.batch_norm.running_var']" in message
    assert "unexpected keys: ['projector.extra.weight']" in message
    assert "shape mismatch for projector.linear.weight: checkpoint (12, 9)" in message


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
    hf = transformers.GraniteSpeechForConditionalGeneration(_hf_config())
    assert hf.config.text_config.tie_word_embeddings is False
    assert hf.lm_head.weight.data_ptr() == hf.model.language_model.embed_tokens.weight.data_ptr()
    hf.save_pretrained(tmp_path)
    assert "language_model.lm_head.weight" not in read_tensors(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["tie_word_embeddings"] is True
    model = jax_model(tmp_path)
    assert model.language_model.lm_head is None
    assert count_params(model.config) == sum(p.numel() for p in hf.parameters())


def test_model_rejects_inconsistent_configs():
    small = GraniteSpeechConfig(
        encoder=GraniteEncoderConfig(hidden_dim=16, num_heads=2, num_layers=1),
        text=GraniteTextConfig(vocab_size=10, hidden_size=8, num_attention_heads=2),
        audio_token_id=10,
    )
    with pytest.raises(ValueError, match="audio_token_id=10 lies outside"):
        _abstract(small)
    with pytest.raises(ValueError, match="encoder_hidden_size=1408"):
        _abstract(dataclasses.replace(small, audio_token_id=9))
