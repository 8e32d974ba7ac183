"""GraniteSpeechLM against transformers' GraniteSpeechForConditionalGeneration where Granite
Speech differs from other families (tiny, float32): the conformer encoder's output, the
projector's padding tokens, the logits scaling and the processor's audio-token count. What
every family shares is in test_family_parity.py."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sallm_jax.models.granite_speech.config import granite_audio_token_count  # noqa: E402
from tests.models.hf_tiny import parity_models  # noqa: E402
from tests.models.tiny import forward  # noqa: E402

TOL = 1e-4

encode = nnx.jit(lambda model, features: model.encoder(features))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(hf model, ours loaded from its save_pretrained dir, inputs, hf outputs)."""
    return parity_models("granite_speech", tmp_path_factory.mktemp("granite_speech_tiny"))


def test_encoder_matches_transformers(models):
    _, ours, (features, _, _, _), hf_out = models
    encoded = np.asarray(encode(ours, jnp.asarray(features)))
    assert encoded.shape == hf_out["encoder"].shape == (2, features.shape[1], 32)
    np.testing.assert_allclose(encoded, hf_out["encoder"], atol=TOL, rtol=0)


def test_apply_logits_scaling_matches_granite_for_causal_lm(models):
    """apply_logits_scaling=True gives GraniteForCausalLM's logits (the 5.23 wrapper's / scale).

    Text only, against transformers' own Granite causal LM holding the wrapper's weights.
    """
    hf, ours, (_, _, input_ids, attention_mask), _ = models
    causal = transformers.GraniteForCausalLM(hf.config.text_config).eval()
    causal.model.load_state_dict(hf.model.language_model.state_dict())
    with torch.no_grad():
        causal.lm_head.weight.copy_(hf.lm_head.weight)
    text_ids = np.where(input_ids == ours.config.audio_token_id, 5, input_ids)
    positions = np.maximum(np.cumsum(attention_mask, axis=1) - 1, 0)
    with torch.no_grad():
        reference = causal(
            input_ids=torch.from_numpy(text_ids).long(),
            attention_mask=torch.from_numpy(attention_mask).long(),
            position_ids=torch.from_numpy(positions).long(),
        ).logits.numpy()
    text = dataclasses.replace(ours.config.text, apply_logits_scaling=True)
    scaled = nnx.clone(ours)
    scaled.config = dataclasses.replace(ours.config, text=text)
    scaled.language_model.config = text
    logits = np.asarray(forward(scaled, jnp.asarray(text_ids), jnp.asarray(attention_mask)))
    valid = attention_mask.astype(bool)
    scale = ours.config.text.logits_scaling
    assert scale == 4.0
    np.testing.assert_allclose(logits[valid], reference[valid], atol=TOL / scale, rtol=0)
    assert np.abs(reference[valid]).max() > 0.5  # not vanishing: the scale shows


def test_audio_token_count_matches_the_processor():
    extractor = transformers.GraniteSpeechFeatureExtractor.__new__(
        transformers.GraniteSpeechFeatureExtractor
    )  # __init__ needs torchaudio; the counting rule reads only these attributes
    extractor.melspec_kwargs = {"hop_length": 160}
    extractor.projector_window_size, extractor.projector_downsample_rate = 15, 5
    samples = [1, 159, 160, 4_639, 4_640, 4_960, 16_000, 160_000]
    expected = extractor._get_num_audio_features(samples)
    frames = (np.array(samples) // 160 + 1) // 2
    np.testing.assert_array_equal(granite_audio_token_count(frames), expected)
    assert granite_audio_token_count(30) == 6 and granite_audio_token_count(31) == 9
