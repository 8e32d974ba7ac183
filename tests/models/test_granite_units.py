"""GraniteSpeechLM behaviour the parity test does not pin: merge rule, where the multipliers sit,
padding, dtypes, sharding names, shapes at full length, and the SpeechLM interface in use."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sallm_jax.audio.granite_features import granite_feature_frames
from sallm_jax.models.granite_speech.config import (
    GraniteEncoderConfig,
    GraniteProjectorConfig,
    GraniteSpeechConfig,
    GraniteTextConfig,
    granite_audio_token_count,
)
from sallm_jax.models.granite_speech.model import GraniteSpeechLM

AUDIO_ID = 47
CONFIG = GraniteSpeechConfig(
    encoder=GraniteEncoderConfig(
        num_layers=2,
        hidden_dim=16,
        feedforward_mult=2,
        num_heads=2,
        output_dim=6,
        context_size=8,
        max_pos_emb=8,
        conv_kernel_size=5,
    ),
    projector=GraniteProjectorConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=24,
        encoder_hidden_size=16,
        cross_attention_frequency=1,
    ),
    text=GraniteTextConfig(
        vocab_size=48,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        embedding_multiplier=6.0,
        attention_multiplier=0.25,
        residual_multiplier=0.5,
        logits_scaling=2.0,
    ),
    audio_token_id=AUDIO_ID,
)
AXIS_NAMES = {
    "embed", "mlp", "heads", "kv_heads", "vocab", "audio_embed", "audio_mlp", "mel",
    "conv_kernel", "pos", None,
}  # fmt: skip

forward = nnx.jit(lambda model, *args: model(*args))


def random_model(config: GraniteSpeechConfig, dtype=jnp.float32) -> GraniteSpeechLM:
    """GraniteSpeechLM with N(0, 0.1) parameters drawn by NumPy and BatchNorm stats (0.1, 1.5).

    Built abstractly and filled: the real initialiser compiles one random program per shape.
    """
    model = nnx.eval_shape(lambda: GraniteSpeechLM(config, rngs=nnx.Rngs(0), dtype=dtype))
    rng = np.random.default_rng(0)
    params = jax.tree.map(
        lambda x: jnp.asarray(0.1 * rng.standard_normal(x.shape), x.dtype),
        nnx.state(model, nnx.Param),
    )
    stats = nnx.state(model, nnx.BatchStat)
    stats = jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.full(x.shape, 1.5 if "var" in str(path[-1]) else 0.1, x.dtype), stats
    )
    nnx.update(model, params, stats)
    return model


@pytest.fixture(scope="module")
def model():
    return random_model(CONFIG)


def test_embed_merges_audio_and_leaves_the_multiplier_to_the_decoder(model):
    a = AUDIO_ID
    ids = jnp.array([[5, a, a, 7, a], [a, a, 3, 4, 6]], jnp.int32)
    audio = jnp.arange(2 * 3 * 32, dtype=jnp.float32).reshape(2, 3, 32) + 1000.0
    out = np.asarray(model.embed(ids, audio))
    table = np.asarray(model.language_model.embed_tokens.embedding[...])
    expected = table[np.asarray(ids)]
    expected[0, 1], expected[0, 2], expected[0, 4] = audio[0, 0], audio[0, 1], audio[0, 2]
    expected[1, 0], expected[1, 1] = audio[1, 0], audio[1, 1]
    np.testing.assert_array_equal(out, expected)  # raw rows: no embedding_multiplier here

    # forward_embeds multiplies whatever it gets, audio rows included (transformers multiplies
    # after its merge): x with multiplier 6 equals 6 x with multiplier 1.
    unscaled = nnx.clone(model)
    text = dataclasses.replace(CONFIG.text, embedding_multiplier=1.0)
    unscaled.language_model.config = text
    positions = jnp.broadcast_to(jnp.arange(5), (2, 5))
    key_mask = jnp.ones((2, 5), bool)
    run = nnx.jit(lambda m, x: m.forward_embeds(x, positions, key_mask)[0])
    np.testing.assert_allclose(
        np.asarray(run(model, jnp.asarray(out))),
        np.asarray(run(unscaled, 6.0 * jnp.asarray(out))),
        atol=1e-5,
        rtol=0,
    )


# Row 0 is row 1 shifted right behind 3 padding tokens; row 1 ends in 3 right-padding tokens.
ROW = [3, 8, *[AUDIO_ID] * 3, 11, 12]
IDS = jnp.array([[0, 0, 0, *ROW], [*ROW, 0, 0, 0]], jnp.int32)
MASK = jnp.array([[0, 0, 0] + [1] * 7, [1] * 7 + [0, 0, 0]], jnp.int32)
FEATURES = jnp.tile(jax.random.normal(jax.random.key(2), (1, 12, 160)), (2, 1, 1))
LENGTHS = jnp.array([12, 12], jnp.int32)  # ceil(12 / 15) * 3 = 3 audio tokens each


def test_padding_does_not_change_logits(model):
    logits = np.asarray(forward(model, IDS, MASK, FEATURES, LENGTHS))
    assert np.isfinite(logits).all()
    np.testing.assert_allclose(logits[0, 3:], logits[1, :7], atol=1e-5, rtol=0)


def test_padding_gives_finite_gradients_and_no_batch_stat_gradients():
    # One block and one decoder layer: the backward pass compiles in a few seconds; the last,
    # partly padded attention block (fully masked query rows) is still there.
    config = dataclasses.replace(
        CONFIG,
        encoder=dataclasses.replace(CONFIG.encoder, num_layers=1),
        text=dataclasses.replace(CONFIG.text, num_hidden_layers=1),
    )
    graphdef, params, rest = nnx.split(random_model(config), nnx.Param, ...)

    def loss(params, rest):
        logits = nnx.merge(graphdef, params, rest)(IDS, MASK, FEATURES, LENGTHS)
        return jnp.sum(jax.nn.log_softmax(logits)[..., 0] * MASK)

    value, grads = jax.jit(jax.value_and_grad(loss))(params, rest)
    assert np.isfinite(value)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    assert len(jax.tree.leaves(rest)) == 2  # BatchNorm mean and var: outside the Param state


def test_bfloat16_compute_tracks_float32(model):
    bf16_model = random_model(CONFIG, dtype=jnp.bfloat16)  # the same draws as `model`
    bf16 = forward(bf16_model, IDS, MASK, FEATURES, LENGTHS)
    assert bf16.dtype == jnp.float32
    f32 = forward(model, IDS, MASK, FEATURES, LENGTHS)
    valid = np.asarray(MASK, bool)
    np.testing.assert_allclose(np.asarray(bf16)[valid], np.asarray(f32)[valid], atol=5e-2, rtol=0)


def test_parameters_carry_logical_axis_names():
    model = nnx.eval_shape(lambda: GraniteSpeechLM(CONFIG, rngs=nnx.Rngs(0)))
    specs = nnx.to_pure_dict(nnx.get_partition_spec(nnx.state(model, nnx.Param)))
    leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    assert leaves and all(set(spec) <= AXIS_NAMES for spec in leaves)
    lm = specs["language_model"]
    assert tuple(lm["embed_tokens"]["embedding"]) == ("vocab", "embed")
    assert tuple(lm["layers"][0]["self_attn"]["k_proj"]["kernel"]) == ("embed", "kv_heads")
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
