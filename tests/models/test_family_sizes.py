"""New models from sizes, for every registered family: `from_sizes` of the family's
`tiny_sizes` builds the configuration those sizes name, the model runs and hears its audio, and
an audio token outside the vocabulary is refused by either family."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sallm_jax.models.families import families, num_audio_tokens
from sallm_jax.models.granite_speech.config import (
    GraniteEncoderConfig,
    GraniteProjectorConfig,
    GraniteSpeechConfig,
    GraniteTextConfig,
)
from sallm_jax.models.speech_lm_base import SpeechLM

VOCAB, AUDIO_ID = 300, 3


def _fields(config) -> dict:
    """Every field of a (nested) config dataclass, as plain dicts."""
    return dataclasses.asdict(config)


@pytest.mark.parametrize("name", sorted(families()))
def test_from_sizes_takes_every_given_size(name):
    family = families()[name]
    sizes = family.tiny_sizes()
    config = family.from_sizes(sizes["audio"], sizes["text"], VOCAB, AUDIO_ID)
    assert isinstance(config, family.config_class)
    fields = _fields(config)
    assert fields["audio_token_id"] == AUDIO_ID and fields["text"]["vocab_size"] == VOCAB
    assert {k: fields["text"][k] for k in sizes["text"]} == sizes["text"]


def test_granite_sizes_are_its_three_parts():
    sizes = families()["granite_speech"].tiny_sizes()
    config = GraniteSpeechConfig.from_sizes(sizes["audio"], sizes["text"], VOCAB, AUDIO_ID)
    encoder = GraniteEncoderConfig(num_layers=2, hidden_dim=64, num_heads=4, feedforward_mult=2,
                                   context_size=200, conv_kernel_size=15, output_dim=42)
    assert config == GraniteSpeechConfig(
        encoder=encoder,
        projector=GraniteProjectorConfig(hidden_size=64, num_hidden_layers=1,
                                         num_attention_heads=4, intermediate_size=128,
                                         encoder_hidden_size=64),
        text=GraniteTextConfig(vocab_size=VOCAB, hidden_size=128, intermediate_size=384,
                               num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=2),
        audio_token_id=AUDIO_ID, window_size=15, downsample_rate=5)


@pytest.mark.parametrize("name", sorted(families()))
def test_a_new_model_of_each_family_hears_its_audio(name):
    family = families()[name]
    sizes = family.tiny_sizes()
    config = family.from_sizes(sizes["audio"], sizes["text"], VOCAB, AUDIO_ID)
    model = family.model_class(config, rngs=nnx.Rngs(0))
    samples = 16000
    n_audio = num_audio_tokens(config, samples)
    ids = jnp.array([[10, 11] + [AUDIO_ID] * n_audio + [12, 13]], jnp.int32)
    rng = np.random.default_rng(0)
    batch = {"prompt_ids": ids, "prompt_mask": jnp.ones_like(ids),
             "num_samples": jnp.array([samples], jnp.int32)}
    logits = []
    for _ in range(2):
        waveform = jnp.asarray(rng.normal(0, 0.1, (1, samples)), jnp.float32)
        embeds = model.encode_batch_audio({**batch, "waveforms": waveform})
        assert embeds.shape[1] >= n_audio
        logits.append(model.prefill(batch, embeds)[0])
    assert logits[0].shape == (1, VOCAB) and bool(jnp.isfinite(logits[0]).all())
    assert float(jnp.abs(logits[0] - logits[1]).max()) > 1e-4


@pytest.mark.parametrize("name", sorted(families()))
def test_an_audio_token_outside_the_vocabulary_is_refused(name):
    family = families()[name]
    sizes = family.tiny_sizes()
    config = family.from_sizes(sizes["audio"], sizes["text"], VOCAB, VOCAB)
    with pytest.raises(ValueError, match=f"audio_token_id={VOCAB} lies outside the vocabulary"):
        jax.eval_shape(lambda: family.model_class(config, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize("name", sorted(families()))
def test_every_family_model_is_a_speech_lm(name):
    """What rl/, train/ and eval/ call (the `SpeechLM` protocol) each family's model has."""
    family = families()[name]
    sizes = family.tiny_sizes()
    config = family.from_sizes(sizes["audio"], sizes["text"], VOCAB, AUDIO_ID)
    model = jax.eval_shape(lambda: family.model_class(config, rngs=nnx.Rngs(0)))
    members = [n for n in vars(SpeechLM) if not n.startswith("_")] + list(
        SpeechLM.__annotations__)
    assert {"prefill", "forward_embeds", "encode_batch_audio", "config"} <= set(members)
    missing = [n for n in members if not hasattr(model, n)]
    assert missing == [], missing
