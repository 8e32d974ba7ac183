"""Greedy decoding and multi-clip prompts against transformers (tiny random, float32).

* `rollout` at temperature 0 gives the same 32 tokens as `transformers` `generate(do_sample=False)`
  on the same left-padded audio prompts (features computed by our `audio_features` from
  waveforms and handed to transformers as `input_features`), for Qwen2-Audio and Granite Speech.
* A prompt holding two audio clips (two runs of placeholders) gives the same logits as
  transformers fed both clips in `input_features` (per clip, flattened over the batch in order).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from hf_tiny import (  # noqa: E402
    AUDIO_ID,
    FRAMES,
    PAD_ID,
    VOCAB,
    jax_model,  # noqa: E402
    qwen2_audio_config,
    randomise,
    save_qwen2_audio,
)

from sallm_jax.audio.log_mel import num_feature_frames  # noqa: E402
from sallm_jax.models.qwen2_audio.config import audio_token_count  # noqa: E402
from sallm_jax.models.speech_lm_base import positions_from_mask  # noqa: E402
from sallm_jax.rl.rollout import SamplingConfig, rollout  # noqa: E402

TOL = 1e-4
STEPS = 32
HOP = 160
WAVE = FRAMES * HOP  # 200 frames: the one length transformers' Qwen2-Audio encoder accepts
NUM_SAMPLES = (WAVE, 130 * HOP - 37)  # 200 and 130 valid frames


@pytest.fixture(scope="module")
def greedy_models(tmp_path_factory):
    """(hf, ours) with std 0.3 weights: at hf_tiny's std 0.1 greedy decoding falls into repeating
    one token after a step, which would compare almost nothing."""
    path = tmp_path_factory.mktemp("qwen2_audio_tiny_greedy")
    torch.manual_seed(0)
    hf = transformers.Qwen2AudioForConditionalGeneration(qwen2_audio_config()).eval()
    randomise(hf, std=0.3)
    hf.save_pretrained(path)
    return hf, jax_model(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(hf, ours) from hf_tiny's std 0.1 checkpoint, as in test_speech_lm_parity.py."""
    path = tmp_path_factory.mktemp("qwen2_audio_tiny")
    hf = save_qwen2_audio(path)
    return hf, jax_model(path)


def _left_pad(rows):
    seq = max(len(r) for r in rows)
    ids = np.full((len(rows), seq), PAD_ID, np.int32)
    mask = np.zeros((len(rows), seq), np.int32)
    for b, row in enumerate(rows):
        ids[b, seq - len(row) :] = row
        mask[b, seq - len(row) :] = 1
    return ids, mask


def _words(rng, n):
    return rng.integers(1, AUDIO_ID, size=n)


def _hf_audio_inputs(features, lengths):
    """Our [clips, frames, mels] features -> transformers input_features [clips, mels, frames]
    and feature_attention_mask [clips, frames]."""
    features = np.asarray(features)
    frames = features.shape[1]
    assert frames == FRAMES
    feature_mask = (np.arange(frames)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)
    return (
        torch.from_numpy(features.transpose(0, 2, 1).copy()),
        torch.from_numpy(feature_mask),
    )


def test_greedy_rollout_matches_transformers_generate(greedy_models):
    hf, ours = greedy_models
    rng = np.random.default_rng(0)
    num_samples = np.array(NUM_SAMPLES, np.int32)
    waveforms = np.zeros((2, WAVE), np.float32)
    for b, n in enumerate(num_samples):
        waveforms[b, :n] = 0.1 * rng.normal(size=n)
    n_audio = audio_token_count(num_feature_frames(num_samples))
    rows = [
        np.concatenate([_words(rng, 3), np.full(n, AUDIO_ID), _words(rng, k)])
        for n, k in zip(n_audio, (5, 11), strict=True)
    ]
    prompt_ids, prompt_mask = _left_pad(rows)
    batch = {
        "waveforms": jnp.asarray(waveforms),
        "num_samples": jnp.asarray(num_samples),
        "prompt_ids": jnp.asarray(prompt_ids),
        "prompt_mask": jnp.asarray(prompt_mask),
    }
    never = VOCAB + 7  # an id outside the vocabulary: no step ever ends
    out = nnx.jit(
        lambda model, batch, key: rollout(
            model,
            batch,
            key,
            sampling=SamplingConfig(max_new_tokens=STEPS, temperature=0.0),
            group_size=1,
            eos_ids=(never,),
            pad_id=PAD_ID,
        )
    )(ours, batch, jax.random.key(0))
    ours_ids = np.asarray(out.ids)
    assert ours_ids.shape == (2, STEPS)
    assert np.asarray(out.mask).all() and np.asarray(out.truncated).all()

    features, lengths = ours.audio_features(batch["waveforms"], batch["num_samples"])
    input_features, feature_mask = _hf_audio_inputs(features, lengths)
    with torch.no_grad():
        generated = hf.generate(
            input_ids=torch.from_numpy(prompt_ids).long(),
            attention_mask=torch.from_numpy(prompt_mask).long(),
            input_features=input_features,
            feature_attention_mask=feature_mask,
            do_sample=False,
            max_new_tokens=STEPS,
            min_new_tokens=STEPS,
            eos_token_id=None,
            pad_token_id=PAD_ID,
        )
    hf_ids = generated[:, prompt_ids.shape[1] :].numpy()
    assert hf_ids.shape == (2, STEPS)
    # Not a degenerate repetition: a weak comparison would hide behind one repeated token.
    assert all(len(set(row)) > 3 for row in ours_ids.tolist()), ours_ids
    np.testing.assert_array_equal(ours_ids, hf_ids)


def test_two_clips_in_one_prompt_match_transformers(models):
    hf, ours = models
    rng = np.random.default_rng(1)
    # Clips A, B (row 0, in that order) and C (row 1).
    lengths = np.array([200, 130, 170], np.int32)
    features = rng.normal(size=(3, FRAMES, 80)).astype(np.float32)
    for c, n in enumerate(lengths):
        features[c, n:] = -0.75
    counts = audio_token_count(lengths)
    rows = [
        np.concatenate(
            [
                _words(rng, 2),
                np.full(counts[0], AUDIO_ID),
                _words(rng, 3),
                np.full(counts[1], AUDIO_ID),
                _words(rng, 6),
            ]
        ),
        np.concatenate([_words(rng, 4), np.full(counts[2], AUDIO_ID), _words(rng, 9)]),
    ]
    input_ids, attention_mask = _left_pad(rows)

    audio = np.asarray(
        nnx.jit(lambda model, f, n: model.encode_audio(f, n))(
            ours, jnp.asarray(features), jnp.asarray(lengths)
        )
    )
    per_row = [
        np.concatenate([audio[0, : counts[0]], audio[1, : counts[1]]]),
        audio[2, : counts[2]],
    ]
    width = max(len(r) for r in per_row)
    audio_embeds = np.zeros((2, width, audio.shape[-1]), np.float32)
    for b, r in enumerate(per_row):
        audio_embeds[b, : len(r)] = r

    @nnx.jit
    def forward(model, ids, mask, audio_embeds):
        embeds = model.embed(ids, audio_embeds)
        logits, _ = model.forward_embeds(embeds, positions_from_mask(mask), mask.astype(bool))
        return logits

    logits = forward(ours, *map(jnp.asarray, (input_ids, attention_mask, audio_embeds)))
    logits = np.asarray(logits)

    input_features, feature_mask = _hf_audio_inputs(features, lengths)
    positions = np.maximum(np.cumsum(attention_mask, axis=1) - 1, 0)
    with torch.no_grad():
        hf_out = hf(
            input_ids=torch.from_numpy(input_ids).long(),
            attention_mask=torch.from_numpy(attention_mask).long(),
            input_features=input_features,
            feature_attention_mask=feature_mask,
            position_ids=torch.from_numpy(positions).long(),
        )
    hf_logits = hf_out.logits.float().numpy()
    valid = attention_mask.astype(bool)
    np.testing.assert_allclose(logits[valid], hf_logits[valid], atol=TOL, rtol=0)


def test_granite_greedy_rollout_matches_transformers_generate(tmp_path):
    try:  # tests/models is on sys.path when pytest collected it
        from test_granite_parity import hf_config
    except ImportError:
        from tests.models.test_granite_parity import hf_config

    from sallm_jax.models.granite_speech.config import granite_audio_token_count

    torch.manual_seed(0)
    hf = transformers.GraniteSpeechForConditionalGeneration(hf_config()).eval()
    randomise(hf, std=0.3)  # see greedy_models
    hf.save_pretrained(tmp_path)
    ours = jax_model(tmp_path)
    audio_id, vocab = hf.config.audio_token_index, hf.config.text_config.vocab_size

    rng = np.random.default_rng(0)
    num_samples = np.array([73 * HOP + 11, 39 * HOP], np.int32)  # 37 and 20 stacked frames
    waveforms = np.zeros((2, num_samples.max()), np.float32)
    for b, n in enumerate(num_samples):
        waveforms[b, :n] = 0.1 * rng.normal(size=n)
    batch = {"waveforms": jnp.asarray(waveforms), "num_samples": jnp.asarray(num_samples)}
    features, lengths = ours.audio_features(batch["waveforms"], batch["num_samples"])
    counts = granite_audio_token_count(np.asarray(lengths))
    rows = [
        np.concatenate(
            [rng.integers(1, audio_id, 3), np.full(n, audio_id), rng.integers(1, audio_id, k)]
        )
        for n, k in zip(counts, (5, 9), strict=True)
    ]
    prompt_ids, prompt_mask = _left_pad(rows)
    batch.update(prompt_ids=jnp.asarray(prompt_ids), prompt_mask=jnp.asarray(prompt_mask))
    out = nnx.jit(
        lambda model, batch, key: rollout(
            model,
            batch,
            key,
            sampling=SamplingConfig(max_new_tokens=STEPS, temperature=0.0),
            group_size=1,
            eos_ids=(vocab + 7,),
            pad_id=PAD_ID,
        )
    )(ours, batch, jax.random.key(0))
    ours_ids = np.asarray(out.ids)

    feature_mask = np.arange(counts.max())[None, :] < counts[:, None]
    with torch.no_grad():
        generated = hf.generate(
            input_ids=torch.from_numpy(prompt_ids).long(),
            attention_mask=torch.from_numpy(prompt_mask).long(),
            input_features=torch.from_numpy(np.array(features)),
            input_features_mask=torch.from_numpy(feature_mask),
            do_sample=False,
            max_new_tokens=STEPS,
            min_new_tokens=STEPS,
            eos_token_id=None,
            pad_token_id=PAD_ID,
        )
    hf_ids = generated[:, prompt_ids.shape[1] :].numpy()
    assert all(len(set(row)) > 3 for row in ours_ids.tolist()), ours_ids
    np.testing.assert_array_equal(ours_ids, hf_ids)
