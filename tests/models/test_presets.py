"""Model presets: published sizes, and parameter counts from shapes against transformers.

Counting a full-size preset takes tens of seconds of tracing on a small CPU, so the checks run
on each preset with every layer stack cut to two layers (same widths, vocabularies and
heads, so every per-layer and per-table term is exercised); the counts in presets.py's docstring
and the README come from the full presets.
"""

from __future__ import annotations

import dataclasses

import pytest

from sallm_jax.models.abstract import count_params
from sallm_jax.models.lora import LoRAParam
from sallm_jax.models.presets import PRESETS, get_preset
from sallm_jax.models.qwen2_audio.config import Qwen2AudioConfig

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sallm_jax.models.hub.export import hf_config_dict  # noqa: E402


def _two_layers(config):
    replace = dataclasses.replace
    if isinstance(config, Qwen2AudioConfig):
        return replace(
            config,
            audio=replace(config.audio, encoder_layers=2),
            text=replace(config.text, num_hidden_layers=2),
        )
    return replace(
        config,
        encoder=replace(config.encoder, num_layers=2),
        projector=replace(config.projector, num_hidden_layers=2),
        text=replace(config.text, num_hidden_layers=2),
    )


def _transformers_count(config) -> int:
    """Parameters of the transformers model built from our config.json, on the meta device."""
    values = hf_config_dict(config)
    model_class = getattr(transformers, values["architectures"][0])
    with torch.device("meta"):
        model = model_class(transformers.AutoConfig.for_model(**values))
    return sum(p.numel() for p in model.parameters())


def test_qwen2_audio_7b_has_the_published_sizes():
    config = get_preset("qwen2_audio_7b")
    text, audio = config.text, config.audio
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads) == (4096, 32, 32)
    assert (text.num_key_value_heads, text.intermediate_size, text.vocab_size) == (
        32,
        11008,
        156032,
    )
    assert (text.rms_norm_eps, text.rope_theta, text.tie_word_embeddings) == (1e-5, 1e4, False)
    assert (audio.num_mel_bins, audio.d_model, audio.encoder_layers) == (128, 1280, 32)
    assert audio.encoder_attention_heads == 20 and config.audio_token_id == 151646
    with pytest.raises(KeyError, match="known: \\['granite_speech_2b'"):
        get_preset("qwen2_audio_70b")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_count_params_matches_transformers(name):
    config = _two_layers(PRESETS[name])
    assert count_params(config) == _transformers_count(config)


def test_qwen2_audio_7b_count_by_hand():
    """The two-layer Qwen2-Audio count, written out term by term."""
    config = _two_layers(PRESETS["qwen2_audio_7b"])
    d, f, mels, pos = 1280, 5120, 128, 1500
    h, inner, vocab, kv = 4096, 11008, 156032, 4096
    encoder_layer = (3 * (d * d + d) + d * d - d + d) + (d * f + f) + (f * d + d) + 2 * 2 * d
    encoder = (mels * d * 3 + d) + (d * d * 3 + d) + pos * d + 2 * encoder_layer + 2 * d
    decoder_layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * inner + 2 * h
    decoder = vocab * h + 2 * decoder_layer + h + h * vocab
    assert count_params(config) == encoder + (d * h + h) + decoder


def test_lora_count():
    """Rank r on q_proj and v_proj: r (in + out) per layer, over all decoder layers."""
    config = _two_layers(PRESETS["granite_speech_2b"])
    rank, h, kv = 64, 2048, 8 * 64
    expected = 2 * rank * ((h + h) + (h + kv))
    assert count_params(config, lora_rank=rank, filter=LoRAParam) == expected
    assert count_params(config, lora_rank=rank) == count_params(config) + expected
