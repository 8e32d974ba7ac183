"""Qwen2AudioLM (Qwen2-Audio) shapes and audio-token count at full length; its comparisons with
transformers are in test_family_parity.py."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sallm_jax.models.qwen2_audio.config import audio_token_count
from sallm_jax.models.qwen2_audio.model import Qwen2AudioLM
from tests.models.tiny import TINY


def test_shapes_and_token_count():
    assert audio_token_count(3000) == 750
    np.testing.assert_array_equal(
        audio_token_count(np.array([3000, 200, 130, 4])), [750, 50, 32, 1]
    )
    tiny = TINY["qwen2_audio"].config
    config = dataclasses.replace(
        tiny, audio=dataclasses.replace(tiny.audio, max_source_positions=1500)
    )
    mels, hidden, vocab = config.audio.num_mel_bins, config.text.hidden_size, config.text.vocab_size

    def shapes(batch, seq, frames):
        # Abstract evaluation: the 3000-frame encoder is traced, never run.
        def run():
            model = Qwen2AudioLM(config, rngs=nnx.Rngs(0))
            features = jnp.zeros((batch, frames, mels))
            lengths = jnp.full((batch,), frames, jnp.int32)
            audio = model.encode_audio(features, lengths)
            ids = jnp.zeros((batch, seq), jnp.int32)
            return audio, model(ids, jnp.ones_like(ids), features, lengths)

        return nnx.eval_shape(run)

    audio, logits = shapes(3, 20, 3000)
    assert audio.shape == (3, 750, hidden)
    assert logits.shape == (3, 20, vocab) and logits.dtype == jnp.float32
    audio, _ = shapes(1, 4, 1001)  # any frame count up to 3000, odd ones too
    assert audio.shape == (1, audio_token_count(1001), hidden)
    with pytest.raises(ValueError, match="at most 3000"):
        shapes(1, 4, 3002)
