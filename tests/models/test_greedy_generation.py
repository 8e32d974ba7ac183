"""Greedy decoding and multi-clip prompts against transformers (tiny random, float32).

* `rollout` at temperature 0 gives the same 32 tokens as `transformers` `generate(do_sample=False)`
  on the same left-padded audio prompts (features computed by our `audio_features` from
  waveforms and handed to transformers as its audio inputs), for every registered family.
* A Qwen2-Audio prompt holding two audio clips (two runs of placeholders) gives the same logits
  as transformers fed both clips in `input_features` (per clip, flattened over the batch in
  order).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sallm_jax.models.families import family_for_type  # noqa: E402
from sallm_jax.models.qwen2_audio.config import audio_token_count  # noqa: E402
from sallm_jax.models.speech_lm_base import positions_from_mask  # noqa: E402
from sallm_jax.rl.rollout import SamplingConfig, rollout  # noqa: E402
from tests.models.hf_tiny import (  # noqa: E402
    PAD_ID,
    TINY_CHECKPOINTS,
    hf_audio_inputs,
    hf_logits,
    jax_model,
    left_pad,
    save_checkpoint,
)
from tests.models.tiny import FAMILY_TYPES  # noqa: E402

TOL = 1e-4
STEPS = 32


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_greedy_rollout_matches_transformers_generate(model_type, tmp_path):
    """With std 0.3 weights: at hf_tiny's std 0.1 greedy decoding falls into repeating one
    token after a step, which would compare almost nothing."""
    hf = save_checkpoint(tmp_path, model_type, std=0.3)
    ours = jax_model(tmp_path)
    family = family_for_type(model_type)
    audio_id, vocab = ours.config.audio_token_id, ours.config.text.vocab_size

    rng = np.random.default_rng(0)
    num_samples = np.array(TINY_CHECKPOINTS[model_type].clip_samples, np.int32)
    waveforms = np.zeros((2, num_samples.max()), np.float32)
    for b, n in enumerate(num_samples):
        waveforms[b, :n] = 0.1 * rng.normal(size=n)
    n_audio = family.audio_tokens(ours.config, family.feature_frames(num_samples))
    rows = [
        np.concatenate([rng.integers(1, audio_id, 3), np.full(n, audio_id),
                        rng.integers(1, audio_id, k)])
        for n, k in zip(n_audio, TINY_CHECKPOINTS[model_type].suffixes, strict=True)
    ]
    prompt_ids, prompt_mask = left_pad(rows)
    batch = {
        "waveforms": jnp.asarray(waveforms),
        "num_samples": jnp.asarray(num_samples),
        "prompt_ids": jnp.asarray(prompt_ids),
        "prompt_mask": jnp.asarray(prompt_mask),
    }
    never = vocab + 7  # an id outside the vocabulary: no step ever ends
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
    with torch.no_grad():
        generated = hf.generate(
            input_ids=torch.from_numpy(prompt_ids).long(),
            attention_mask=torch.from_numpy(prompt_mask).long(),
            **hf_audio_inputs(hf, features, lengths),
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


def test_two_clips_in_one_prompt_match_transformers(tmp_path):
    hf = save_checkpoint(tmp_path, "qwen2_audio")
    ours = jax_model(tmp_path)
    audio_id = ours.config.audio_token_id
    rng = np.random.default_rng(1)

    def words(n):
        return rng.integers(1, audio_id, size=n)

    # Clips A, B (row 0, in that order) and C (row 1); transformers takes 200 frames only.
    lengths = np.array([200, 130, 170], np.int32)
    features = rng.normal(size=(3, 200, ours.config.audio.num_mel_bins)).astype(np.float32)
    for c, n in enumerate(lengths):
        features[c, n:] = -0.75
    counts = audio_token_count(lengths)
    rows = [
        np.concatenate(
            [
                words(2),
                np.full(counts[0], audio_id),
                words(3),
                np.full(counts[1], audio_id),
                words(6),
            ]
        ),
        np.concatenate([words(4), np.full(counts[2], audio_id), words(9)]),
    ]
    input_ids, attention_mask = left_pad(rows)

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

    # transformers takes the three clips flattened over the batch, in order.
    theirs = hf_logits(hf, features, lengths, input_ids, attention_mask)
    valid = attention_mask.astype(bool)
    np.testing.assert_allclose(logits[valid], theirs[valid], atol=TOL, rtol=0)
