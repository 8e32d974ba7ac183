"""The sampler: greedy determinism, end tokens, the KV cache against a full forward pass, and
prompt-major tiling of the group."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sallm_jax.audio.log_mel import num_feature_frames
from sallm_jax.models.qwen2_audio.config import (
    AudioEncoderConfig,
    Qwen2AudioConfig,
    audio_token_count,
)
from sallm_jax.models.qwen2_audio.model import Qwen2AudioLM
from sallm_jax.models.qwen2_config import TextConfig
from sallm_jax.rl.policy import completion_logprobs
from sallm_jax.rl.rollout import SamplingConfig, rollout

AUDIO_ID, PAD_ID, EOS_ID = 3, 0, 1
CONFIG = Qwen2AudioConfig(
    audio=AudioEncoderConfig(num_mel_bins=80, d_model=32, encoder_layers=1,
                             encoder_attention_heads=2, encoder_ffn_dim=64,
                             max_source_positions=100),
    text=TextConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
    audio_token_id=AUDIO_ID)


@pytest.fixture(scope="module")
def model():
    return Qwen2AudioLM(CONFIG, rngs=nnx.Rngs(0))


def make_batch(num_samples=(4000, 2500), prompt_len=40, seed=0):
    """Left-padded prompts: text, one audio placeholder per audio token, text."""
    rng = np.random.default_rng(seed)
    width = max(num_samples)
    waves = np.zeros((len(num_samples), width), np.float32)
    ids = np.full((len(num_samples), prompt_len), PAD_ID, np.int32)
    mask = np.zeros_like(ids)
    for b, n in enumerate(num_samples):
        waves[b, :n] = rng.normal(0, 0.1, n)
        n_audio = int(audio_token_count(num_feature_frames(n)))
        prompt = [7, 8] + [AUDIO_ID] * n_audio + list(rng.integers(10, 50, 3 + b))
        ids[b, -len(prompt):] = prompt
        mask[b, -len(prompt):] = 1
    return {"waveforms": jnp.asarray(waves), "num_samples": jnp.asarray(num_samples, jnp.int32),
            "prompt_ids": jnp.asarray(ids), "prompt_mask": jnp.asarray(mask)}


def run(model, batch, *, group=1, eos=(EOS_ID,), rng=0, **sampling):
    sampling = SamplingConfig(**{"max_new_tokens": 12, "temperature": 0.0, **sampling})
    return rollout(model, batch, jax.random.key(rng), sampling=sampling, group_size=group,
                   eos_ids=eos, pad_id=PAD_ID)


def test_greedy_is_deterministic_and_matches_full_forward(model):
    batch = make_batch()
    a, b = run(model, batch, rng=0), run(model, batch, rng=1)
    np.testing.assert_array_equal(a.ids, b.ids)
    # Every greedy token is the argmax of a full (cache-free) forward over prompt + completion,
    # and the training log-probs are that forward's log-softmax at those tokens.
    features = model.audio_features(batch["waveforms"], batch["num_samples"])
    full = model(jnp.concatenate([batch["prompt_ids"], a.ids], 1),
                 jnp.concatenate([batch["prompt_mask"], a.mask], 1), *features)
    p = batch["prompt_ids"].shape[1]
    full_logp = np.asarray(jax.nn.log_softmax(full[:, p - 1 : -1]))
    ids, m = np.asarray(a.ids), np.asarray(a.mask).astype(bool)
    np.testing.assert_array_equal(ids[m], full_logp.argmax(-1)[m])
    logp = completion_logprobs(model, batch, a.ids, a.mask)
    expected = np.take_along_axis(full_logp, ids[..., None], -1)[..., 0]
    np.testing.assert_allclose(np.asarray(logp)[m], expected[m], atol=1e-5)


def test_text_only_prompts_match_the_full_forward(model):
    # A batch without "waveforms" is text-only: no placeholder is replaced, no encoder runs.
    rng = np.random.default_rng(3)
    ids = np.full((2, 9), PAD_ID, np.int32)
    ids[0, 2:], ids[1, :] = rng.integers(10, 50, 7), rng.integers(10, 50, 9)
    batch = {"prompt_ids": jnp.asarray(ids), "prompt_mask": jnp.asarray((ids != PAD_ID) * 1)}
    out = run(model, batch, group=2)
    full = model(jnp.concatenate([jnp.repeat(batch["prompt_ids"], 2, 0), out.ids], 1),
                 jnp.concatenate([jnp.repeat(batch["prompt_mask"], 2, 0), out.mask], 1))
    full_logp = np.asarray(jax.nn.log_softmax(full[:, 8:-1]))
    m = np.asarray(out.mask).astype(bool)
    np.testing.assert_array_equal(np.asarray(out.ids)[m], full_logp.argmax(-1)[m])
    logp = completion_logprobs(model, batch, out.ids, out.mask, group_size=2)
    expected = np.take_along_axis(full_logp, np.asarray(out.ids)[..., None], -1)[..., 0]
    np.testing.assert_allclose(np.asarray(logp)[m], expected[m], atol=1e-5)


def test_end_token_stops_each_sample(model):
    batch = make_batch()
    # Sampled (same key both times, so identical up to the stop) for a varied token sequence.
    free = run(model, batch, eos=(EOS_ID,), temperature=1.0)
    # Declare the first token of row 0 that did not occur before it an end token: row 0 must
    # end right there, with padding after it.
    row = [int(t) for t in free.ids[0]]
    t = next(i for i in range(1, len(row)) if row[i] not in row[:i])
    out = run(model, batch, eos=(EOS_ID, row[t]), temperature=1.0)
    np.testing.assert_array_equal(out.ids[0, : t + 1], row[: t + 1])
    np.testing.assert_array_equal(out.ids[0, t + 1 :], PAD_ID)
    np.testing.assert_array_equal(out.mask[0], [1] * (t + 1) + [0] * (11 - t))
    assert not bool(out.truncated[0])
    assert bool(free.truncated[0]) == (EOS_ID not in np.asarray(free.ids[0]))


def test_group_rows_are_prompt_major(model):
    batch = make_batch()
    single = run(model, batch)
    tiled = run(model, batch, group=3)
    expected = np.repeat(np.asarray(single.ids), 3, axis=0)
    np.testing.assert_array_equal(tiled.ids, expected)


def test_sampled_groups_differ_and_respect_top_k(model):
    batch = make_batch()
    out = run(model, batch, group=4, temperature=1.0, top_k=1)
    greedy = run(model, batch)
    np.testing.assert_array_equal(out.ids, np.repeat(np.asarray(greedy.ids), 4, axis=0))
    hot = run(model, batch, group=4, temperature=5.0)
    assert len({tuple(r) for r in np.asarray(hot.ids)[:4]}) > 1


def test_rollout_logprobs_match_the_trainer_and_rise_when_the_parameters_move(model):
    from sallm_jax.rl.diagnostics import logp_difference

    batch = make_batch()
    temperature = 0.7
    out = run(model, batch, group=2, temperature=temperature, top_k=20)
    m = np.asarray(out.mask).astype(bool)
    # Reference: a cache-free forward over prompt + completion, log-softmax of logits / T.
    features = model.audio_features(batch["waveforms"], batch["num_samples"])
    full = model(jnp.concatenate([jnp.repeat(batch["prompt_ids"], 2, 0), out.ids], 1),
                 jnp.concatenate([jnp.repeat(batch["prompt_mask"], 2, 0), out.mask], 1),
                 *(jnp.repeat(f, 2, 0) for f in features))
    p = batch["prompt_ids"].shape[1]
    full_logp = np.asarray(jax.nn.log_softmax(full[:, p - 1 : -1] / temperature))
    expected = np.take_along_axis(full_logp, np.asarray(out.ids)[..., None], -1)[..., 0]
    np.testing.assert_allclose(np.asarray(out.logp)[m], expected[m], atol=1e-5)
    # The trainer's log-probs at the same parameters: the gap is float32 noise.
    trainer = completion_logprobs(model, batch, out.ids, out.mask, group_size=2,
                                  temperature=temperature)
    same = logp_difference(out.logp, trainer, out.mask)
    assert float(same["logp_diff/max"]) < 1e-5
    assert float(same["logp_diff/mean"]) <= float(same["logp_diff/max"])
    # Parameters moved between rollout and update (stale sampler weights): the gap shows it.
    graphdef, state = nnx.split(model)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(5), len(leaves))
    moved = nnx.merge(graphdef, jax.tree.unflatten(treedef, [
        x + 0.05 * jax.random.normal(k, x.shape, x.dtype) if jnp.issubdtype(x.dtype, jnp.floating)
        else x for x, k in zip(leaves, keys, strict=True)]))
    stale = logp_difference(out.logp, completion_logprobs(moved, batch, out.ids, out.mask,
                                                          group_size=2, temperature=temperature),
                            out.mask)
    diff = np.abs(np.asarray(out.logp) - np.asarray(completion_logprobs(
        moved, batch, out.ids, out.mask, group_size=2, temperature=temperature)))[m]
    np.testing.assert_allclose(stale["logp_diff/mean"], diff.mean(), rtol=1e-5)
    np.testing.assert_allclose(stale["logp_diff/max"], diff.max(), rtol=1e-6)
    assert float(stale["logp_diff/mean"]) > 1e-3


def test_repetition_penalty_in_the_loop_matches_the_full_forward(model):
    """Greedy decoding with a repetition penalty: each token is the argmax of the full
    forward's logits with transformers' penalty over the row's prompt (without padding) and
    the completion before it; the penalty changes what is decoded."""
    batch = make_batch()
    penalty = 3.0
    out = run(model, batch, repetition_penalty=penalty)
    assert not np.array_equal(np.asarray(out.ids), np.asarray(run(model, batch).ids))
    features = model.audio_features(batch["waveforms"], batch["num_samples"])
    full = np.asarray(model(jnp.concatenate([batch["prompt_ids"], out.ids], 1),
                            jnp.concatenate([batch["prompt_mask"], out.mask], 1), *features))
    p = batch["prompt_ids"].shape[1]
    ids, mask = np.asarray(out.ids), np.asarray(out.mask)
    for b in range(ids.shape[0]):
        prompt = np.asarray(batch["prompt_ids"][b])[np.asarray(batch["prompt_mask"][b]) > 0]
        for t in np.nonzero(mask[b])[0]:
            logits = full[b, p - 1 + t].astype(np.float64)
            for token in set(prompt) | set(ids[b, :t]):
                logits[token] = logits[token] * penalty if logits[token] < 0 else (
                    logits[token] / penalty)
            assert ids[b, t] == logits.argmax()


def test_min_p_one_keeps_only_the_most_likely_token(model):
    # min_p = 1 removes every token less likely than the top one: sampling is greedy.
    batch = make_batch()
    sampled = run(model, batch, group=3, temperature=1.0, min_p=1.0)
    greedy = run(model, batch, group=3, temperature=1.0, top_k=1)
    np.testing.assert_array_equal(sampled.ids, greedy.ids)
