"""Qwen2AudioLM (Qwen2-Audio) behaviour the parity tests and test_family_units.py do not pin:
placeholders without audio, sharding names of its head and convolution, tied embeddings and the
encoder's positions."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sallm_jax.models.abstract import count_params
from sallm_jax.models.qwen2_audio.model import Qwen2AudioLM
from tests.models.tiny import AUDIO_ID, TINY, random_model

CONFIG = TINY["qwen2_audio"].config


@pytest.fixture(scope="module")
def model():
    return random_model(CONFIG)


def test_embed_without_audio_looks_every_id_up(model):
    a = AUDIO_ID
    ids = jnp.array([[5, a, a, 7, a], [a, a, 3, 4, 6]], jnp.int32)
    table = np.asarray(model.language_model.embed_tokens.embedding[...])
    np.testing.assert_array_equal(model.embed(ids, None), table[np.asarray(ids)])


def test_head_and_convolution_carry_logical_axis_names():
    model = nnx.eval_shape(lambda: Qwen2AudioLM(CONFIG, rngs=nnx.Rngs(0)))
    specs = nnx.to_pure_dict(nnx.get_partition_spec(nnx.state(model, nnx.Param)))
    assert tuple(specs["language_model"]["lm_head"]["kernel"]) == ("embed", "vocab")
    conv1 = specs["audio_tower"]["conv1"]["kernel"]
    assert tuple(conv1) == ("conv_kernel", "mel", "audio_embed")


def test_tied_embeddings_share_the_table():
    tied = dataclasses.replace(
        CONFIG, text=dataclasses.replace(CONFIG.text, tie_word_embeddings=True)
    )
    assert count_params(CONFIG) - count_params(tied) == 48 * 32
    model = random_model(tied)
    assert model.language_model.lm_head is None
    hidden = jax.random.normal(jax.random.key(4), (1, 2, 32))
    table = model.language_model.embed_tokens.embedding[...]
    np.testing.assert_allclose(
        model.language_model.logits(hidden), hidden @ table.T, atol=1e-5, rtol=0
    )


def test_new_encoder_positions_are_whispers_sinusoids():
    """A model built from scratch starts from the positional table Qwen2-Audio's encoder holds:
    Whisper's sinusoids, restated here from their definition."""
    table = np.asarray(Qwen2AudioLM(CONFIG, rngs=nnx.Rngs(0)).audio_tower.embed_positions[...])
    length, channels = CONFIG.audio.max_source_positions, CONFIG.audio.d_model
    inv = np.exp(-np.log(10000.0) / (channels // 2 - 1) * np.arange(channels // 2))
    angles = np.arange(length)[:, None] * inv[None, :]
    np.testing.assert_allclose(table, np.concatenate([np.sin(angles), np.cos(angles)], 1),
                               atol=1e-6)
