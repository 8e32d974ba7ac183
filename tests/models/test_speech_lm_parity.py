"""SpeechLM against transformers' Qwen2AudioForConditionalGeneration (tiny random, float32)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from cached_decoding import cached_logits  # noqa: E402
from hf_tiny import (  # noqa: E402
    hf_logits,
    jax_model,  # noqa: E402
    qwen2_audio_inputs,
    save_qwen2_audio,
)

from sallm_jax.models.abstract import count_params  # noqa: E402
from sallm_jax.models.qwen2_audio.config import audio_token_count  # noqa: E402

TOL = 1e-4

# Whole-program jit: on a 2-core CPU, eager mode would compile every op separately (seconds).
forward = nnx.jit(lambda model, *args: model(*args))
encode_audio = nnx.jit(lambda model, *args: model.encode_audio(*args))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(hf model, our SpeechLM loaded from its save_pretrained dir, inputs, hf outputs)."""
    path = tmp_path_factory.mktemp("qwen2_audio_tiny")
    hf = save_qwen2_audio(path)
    ours = jax_model(path)

    features, lengths, input_ids, attention_mask = qwen2_audio_inputs()
    captured = {}

    def keep_projector_output(module, args, out):
        # The projector output is what transformers scatters into the prompt; returning None
        # leaves the forward untouched.
        captured["audio"] = out.detach().numpy()

    hook = hf.model.multi_modal_projector.register_forward_hook(keep_projector_output)
    logits = hf_logits(hf, features, lengths, input_ids, attention_mask)
    hook.remove()
    hf_out = {"logits": logits, "audio": captured["audio"]}
    return hf, ours, (features, lengths, input_ids, attention_mask), hf_out


def test_audio_embeddings_match_transformers(models):
    _, ours, (features, lengths, _, _), hf_out = models
    audio = np.asarray(encode_audio(ours, jnp.asarray(features), jnp.asarray(lengths)))
    assert audio.shape == hf_out["audio"].shape == (2, 50, 64)
    for b, n in enumerate(audio_token_count(lengths)):
        np.testing.assert_allclose(audio[b, :n], hf_out["audio"][b, :n], atol=TOL, rtol=0)


def test_logits_match_transformers(models):
    _, ours, (features, lengths, input_ids, attention_mask), hf_out = models
    logits = forward(ours, *map(jnp.asarray, (input_ids, attention_mask, features, lengths)))
    assert logits.dtype == jnp.float32
    logits = np.asarray(logits)
    assert np.isfinite(logits).all()  # padding queries see no key but must not produce NaN
    valid = attention_mask.astype(bool)
    np.testing.assert_allclose(logits[valid], hf_out["logits"][valid], atol=TOL, rtol=0)


def test_cached_decoding_matches_full_forward(models):
    _, ours, (features, lengths, input_ids, attention_mask), hf_out = models
    batch, seq = input_ids.shape
    chunks = [(0, 40), (40, 45)] + [(t, t + 1) for t in range(45, seq)]
    cached, cache = cached_logits(ours, input_ids, attention_mask, features, lengths, chunks,
                                  extra=3)
    assert cache.k.shape == (2, batch, seq + 3, 2, 16)
    valid = attention_mask.astype(bool)
    full = forward(ours, *map(jnp.asarray, (input_ids, attention_mask, features, lengths)))
    full = np.asarray(full)
    np.testing.assert_allclose(cached[valid], full[valid], atol=1e-5, rtol=0)
    np.testing.assert_allclose(cached[valid], hf_out["logits"][valid], atol=TOL, rtol=0)


def test_count_params_matches_transformers(models):
    hf, ours, _, _ = models
    assert count_params(ours.config) == sum(p.numel() for p in hf.parameters())


def test_shapes_and_token_count():
    from sallm_jax.models.qwen2_audio.config import AudioEncoderConfig, SpeechLMConfig
    from sallm_jax.models.qwen2_audio.model import SpeechLM
    from sallm_jax.models.qwen2_config import TextConfig

    assert audio_token_count(3000) == 750
    np.testing.assert_array_equal(
        audio_token_count(np.array([3000, 200, 130, 4])), [750, 50, 32, 1]
    )
    config = SpeechLMConfig(
        audio=AudioEncoderConfig(
            num_mel_bins=8,
            d_model=16,
            encoder_layers=1,
            encoder_attention_heads=2,
            encoder_ffn_dim=32,
            max_source_positions=1500,
        ),
        text=TextConfig(
            vocab_size=40,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        ),
        audio_token_id=39,
    )

    def shapes(batch, seq, frames):
        # Abstract evaluation: the 3000-frame encoder is traced, never run.
        def run():
            model = SpeechLM(config, rngs=nnx.Rngs(0))
            features = jnp.zeros((batch, frames, 8))
            lengths = jnp.full((batch,), frames, jnp.int32)
            audio = model.encode_audio(features, lengths)
            ids = jnp.zeros((batch, seq), jnp.int32)
            return audio, model(ids, jnp.ones_like(ids), features, lengths)

        return nnx.eval_shape(run)

    audio, logits = shapes(3, 20, 3000)
    assert audio.shape == (3, 750, 16)
    assert logits.shape == (3, 20, 40) and logits.dtype == jnp.float32
    audio, _ = shapes(1, 4, 1001)  # any frame count up to 3000, odd ones too
    assert audio.shape == (1, audio_token_count(1001), 16)
    with pytest.raises(ValueError, match="at most 3000"):
        shapes(1, 4, 3002)
