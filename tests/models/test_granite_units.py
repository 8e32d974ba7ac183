"""GraniteSpeechLM behaviour the parity tests and test_family_units.py do not pin: where the
multipliers sit, the projector's sharding names, shapes at full length, and the SpeechLM
interface in use."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sallm_jax.audio.granite_features import granite_feature_frames
from sallm_jax.models.granite_speech.config import granite_audio_token_count
from sallm_jax.models.granite_speech.model import GraniteSpeechLM
from tests.models.tiny import AUDIO_ID, TINY, random_model

CONFIG = TINY["granite_speech"].config


@pytest.fixture(scope="module")
def model():
    return random_model(CONFIG)


def test_the_decoder_multiplies_the_merged_embeddings(model):
    """forward_embeds multiplies whatever it gets, audio rows included (transformers multiplies
    after its merge; `embed` leaves the rows raw, test_family_units.py): x with multiplier 6
    equals 6 x with multiplier 1."""
    a = AUDIO_ID
    ids = jnp.array([[5, a, a, 7, a], [a, a, 3, 4, 6]], jnp.int32)
    audio = jnp.arange(2 * 3 * 32, dtype=jnp.float32).reshape(2, 3, 32) + 1000.0
    out = model.embed(ids, audio)
    unscaled = nnx.clone(model)
    text = dataclasses.replace(CONFIG.text, embedding_multiplier=1.0)
    unscaled.language_model.config = text
    positions = jnp.broadcast_to(jnp.arange(5), (2, 5))
    key_mask = jnp.ones((2, 5), bool)
    run = nnx.jit(lambda m, x: m.forward_embeds(x, positions, key_mask)[0])
    assert CONFIG.text.embedding_multiplier == 6.0
    np.testing.assert_allclose(
        np.asarray(run(model, out)),
        np.asarray(run(unscaled, 6.0 * out)),
        atol=1e-5,
        rtol=0,
    )


def test_projector_carries_logical_axis_names():
    model = nnx.eval_shape(lambda: GraniteSpeechLM(CONFIG, rngs=nnx.Rngs(0)))
    specs = nnx.to_pure_dict(nnx.get_partition_spec(nnx.state(model, nnx.Param)))
    assert tuple(specs["projector"]["linear"]["kernel"]) == ("audio_embed", "embed")


def test_shapes_at_thirty_seconds():
    """30 s = 1500 stacked frames -> 100 windows -> 300 audio tokens (traced, never run)."""

    def run():
        m = GraniteSpeechLM(CONFIG, rngs=nnx.Rngs(0))
        features = jnp.zeros((2, 1500, 160))
        lengths = jnp.array([1500, 701], jnp.int32)
        audio = m.encode_audio(features, lengths)
        ids = jnp.zeros((2, 20), jnp.int32)
        return audio, m(ids, jnp.ones_like(ids), features, lengths)

    audio, logits = nnx.eval_shape(run)
    assert audio.shape == (2, int(granite_audio_token_count(1500)), 32) == (2, 300, 32)
    assert logits.shape == (2, 20, 48) and logits.dtype == jnp.float32


def test_rollout_and_logprobs_run_granite_unchanged(model):
    """The RL code written against SpeechLM drives GraniteSpeechLM as is (the model computes
    its own Granite features from the waveforms)."""
    from sallm_jax.rl.policy import completion_logprobs
    from sallm_jax.rl.rollout import SamplingConfig, rollout

    rng = np.random.default_rng(0)
    n_audio = int(granite_audio_token_count(granite_feature_frames(4000)))
    prompt = np.array([3, *[AUDIO_ID] * n_audio, 9, 10], np.int32)
    batch = {
        "waveforms": jnp.asarray(rng.uniform(-0.5, 0.5, (2, 4000)), jnp.float32),
        "num_samples": jnp.array([4000, 4000], jnp.int32),
        "prompt_ids": jnp.asarray(np.stack([prompt, prompt])),
        "prompt_mask": jnp.ones((2, prompt.size), jnp.int32),
    }
    sample = nnx.jit(
        lambda m, b, key: rollout(
            m, b, key, sampling=SamplingConfig(max_new_tokens=4, temperature=0.0),
            group_size=2, eos_ids=(1,), pad_id=0,
        )
    )  # fmt: skip
    out = sample(model, batch, jax.random.key(0))
    assert out.ids.shape == (4, 4) and out.mask.shape == (4, 4)
    logp = nnx.jit(
        lambda m, b, ids, mask: completion_logprobs(m, b, ids, mask, group_size=2)
    )(model, batch, out.ids, out.mask)
    assert logp.shape == (4, 4) and np.isfinite(np.asarray(logp)).all()
    # Greedy: the first token is the argmax, whose log-prob is at least the uniform one.
    assert np.all(np.asarray(logp)[:, 0] >= np.log(1.0 / CONFIG.text.vocab_size))
