"""Every registered family's model against its transformers class (tiny random, float32):
audio embeddings, logits, cached decoding and parameter counts."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sallm_jax.models.abstract import count_params  # noqa: E402
from sallm_jax.models.families import family_for_type  # noqa: E402
from tests.models.cached_decoding import cached_logits  # noqa: E402
from tests.models.hf_tiny import TINY_CHECKPOINTS, parity_models  # noqa: E402
from tests.models.tiny import FAMILY_TYPES, forward  # noqa: E402

TOL = 1e-4

encode_audio = nnx.jit(lambda model, *args: model.encode_audio(*args))


@pytest.fixture(scope="module", params=FAMILY_TYPES)
def models(request, tmp_path_factory):
    """(model_type, hf model, ours loaded from its save_pretrained dir, inputs, hf outputs)."""
    path = tmp_path_factory.mktemp(request.param)
    return request.param, *parity_models(request.param, path)


def test_audio_embeddings_match_transformers(models):
    model_type, _, ours, (features, lengths, _, _), hf_out = models
    audio = np.asarray(encode_audio(ours, jnp.asarray(features), jnp.asarray(lengths)))
    tokens = family_for_type(model_type).audio_tokens(ours.config, lengths)
    assert audio.shape == hf_out["audio"].shape == (2, tokens.max(), ours.config.text.hidden_size)
    # Every row, padding tokens included: what transformers scatters into the prompt.
    np.testing.assert_allclose(audio, hf_out["audio"], atol=TOL, rtol=0)


def test_logits_match_transformers(models):
    _, _, ours, (features, lengths, input_ids, attention_mask), hf_out = models
    logits = forward(ours, *map(jnp.asarray, (input_ids, attention_mask, features, lengths)))
    assert logits.dtype == jnp.float32
    logits = np.asarray(logits)
    assert np.isfinite(logits).all()  # padding queries see no key but must not produce NaN
    valid = attention_mask.astype(bool)
    np.testing.assert_allclose(logits[valid], hf_out["logits"][valid], atol=TOL, rtol=0)


def test_cached_decoding_matches_full_forward(models):
    model_type, _, ours, (features, lengths, input_ids, attention_mask), hf_out = models
    batch, seq = input_ids.shape
    first, second = TINY_CHECKPOINTS[model_type].prefill_cuts
    chunks = [(0, first), (first, second)] + [(t, t + 1) for t in range(second, seq)]
    cached, cache = cached_logits(ours, input_ids, attention_mask, features, lengths, chunks,
                                  extra=3)
    text = ours.config.text
    assert cache.k.shape == (text.num_hidden_layers, batch, seq + 3, text.num_key_value_heads,
                             text.head_dim)
    valid = attention_mask.astype(bool)
    full = np.asarray(
        forward(ours, *map(jnp.asarray, (input_ids, attention_mask, features, lengths)))
    )
    np.testing.assert_allclose(cached[valid], full[valid], atol=1e-5, rtol=0)
    np.testing.assert_allclose(cached[valid], hf_out["logits"][valid], atol=TOL, rtol=0)


def test_count_params_matches_transformers(models):
    _, hf, ours, _, _ = models
    assert count_params(ours.config) == sum(p.numel() for p in hf.parameters())
