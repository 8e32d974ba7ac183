"""SpeechLM behaviour the parity test does not pin: merge rule, dtypes, sharding names, ties."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sallm_jax.models.abstract import count_params
from sallm_jax.models.qwen2_audio.config import AudioEncoderConfig, SpeechLMConfig
from sallm_jax.models.qwen2_audio.model import SpeechLM
from sallm_jax.models.qwen2_config import TextConfig

AUDIO_ID = 47
CONFIG = SpeechLMConfig(
    audio=AudioEncoderConfig(
        num_mel_bins=8,
        d_model=16,
        encoder_layers=1,
        encoder_attention_heads=2,
        encoder_ffn_dim=32,
        max_source_positions=20,
    ),
    text=TextConfig(
        vocab_size=48,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
    audio_token_id=AUDIO_ID,
)
AXIS_NAMES = {
    "embed", "mlp", "heads", "kv_heads", "vocab", "audio_embed", "audio_mlp", "mel",
    "conv_kernel", "pos", None,
}  # fmt: skip

# Whole-program jit: on a 2-core CPU, eager mode would compile every op separately (seconds).
forward = nnx.jit(lambda model, *args: model(*args))


def random_model(config: SpeechLMConfig, dtype=jnp.float32) -> SpeechLM:
    """SpeechLM with N(0, 0.1) parameters drawn by NumPy.

    Built abstractly and filled, because the real initialiser compiles one random-number program
    per parameter shape, which costs several seconds on a small CPU; std 0.1 (not 0.02) also gives
    attention logits of order one, so masking errors show.
    """
    model = nnx.eval_shape(lambda: SpeechLM(config, rngs=nnx.Rngs(0), dtype=dtype))
    rng = np.random.default_rng(0)
    params = jax.tree.map(
        lambda x: jnp.asarray(0.1 * rng.standard_normal(x.shape), x.dtype),
        nnx.state(model, nnx.Param),
    )
    nnx.update(model, params)
    return model


@pytest.fixture(scope="module")
def model():
    return random_model(CONFIG)


def test_embed_puts_kth_placeholder_to_kth_audio_row(model):
    a = AUDIO_ID
    ids = jnp.array([[5, a, a, 7, a], [a, a, 3, 4, 6]], jnp.int32)
    audio = jnp.arange(2 * 3 * 32, dtype=jnp.float32).reshape(2, 3, 32) + 1000.0
    out = np.asarray(model.embed(ids, audio))
    table = np.asarray(model.language_model.embed_tokens.embedding[...])
    expected = table[np.asarray(ids)]
    expected[0, 1], expected[0, 2], expected[0, 4] = audio[0, 0], audio[0, 1], audio[0, 2]
    expected[1, 0], expected[1, 1] = audio[1, 0], audio[1, 1]
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(model.embed(ids, None), table[np.asarray(ids)])


# Row 0 is row 1 shifted right behind 3 padding tokens; row 1 ends in 3 right-padding tokens.
ROW = [3, 8, AUDIO_ID, AUDIO_ID, 11, 12]
IDS = jnp.array([[0, 0, 0, *ROW], [*ROW, 0, 0, 0]], jnp.int32)
MASK = jnp.array([[0, 0, 0] + [1] * 6, [1] * 6 + [0, 0, 0]], jnp.int32)
FEATURES = jnp.tile(jax.random.normal(jax.random.key(2), (1, 12, 8)), (2, 1, 1))
LENGTHS = jnp.array([10, 10], jnp.int32)  # 2 audio tokens each


def test_padding_does_not_change_logits(model):
    """A row's logits do not depend on left padding before it or right padding after it."""
    logits = np.asarray(forward(model, IDS, MASK, FEATURES, LENGTHS))
    assert np.isfinite(logits).all()
    np.testing.assert_allclose(logits[0, 3:], logits[1, :6], atol=1e-5, rtol=0)


def test_padding_gives_finite_gradients(model):
    def loss(model):
        logits = model(IDS, MASK, FEATURES, LENGTHS)
        return jnp.sum(jax.nn.log_softmax(logits)[..., 0] * MASK)

    value, grads = nnx.jit(nnx.value_and_grad(loss))(model)
    assert np.isfinite(value)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_bfloat16_compute_tracks_float32(model):
    bf16_model = random_model(CONFIG, dtype=jnp.bfloat16)  # the same draws as `model`
    bf16 = forward(bf16_model, IDS, MASK, FEATURES, LENGTHS)
    assert bf16.dtype == jnp.float32
    assert bf16_model.language_model.layers[0].mlp.up_proj.kernel.dtype == jnp.float32
    f32 = forward(model, IDS, MASK, FEATURES, LENGTHS)
    valid = np.asarray(MASK, bool)
    np.testing.assert_allclose(np.asarray(bf16)[valid], np.asarray(f32)[valid], atol=2e-2, rtol=0)


def test_parameters_carry_logical_axis_names():
    model = nnx.eval_shape(lambda: SpeechLM(CONFIG, rngs=nnx.Rngs(0)))
    specs = nnx.to_pure_dict(nnx.get_partition_spec(nnx.state(model, nnx.Param)))
    leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    assert leaves and all(set(spec) <= AXIS_NAMES for spec in leaves)
    lm = specs["language_model"]
    assert tuple(lm["embed_tokens"]["embedding"]) == ("vocab", "embed")
    assert tuple(lm["layers"][0]["self_attn"]["k_proj"]["kernel"]) == ("embed", "kv_heads")
    assert tuple(lm["lm_head"]["kernel"]) == ("embed", "vocab")
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


def test_rejects_audio_token_outside_vocabulary():
    with pytest.raises(ValueError, match="audio_token_id=48"):
        SpeechLM(dataclasses.replace(CONFIG, audio_token_id=48), rngs=nnx.Rngs(0))


def test_new_encoder_positions_are_whispers_sinusoids():
    """A model built from scratch starts from the positional table Qwen2-Audio's encoder holds:
    Whisper's sinusoids, restated here from their definition."""
    table = np.asarray(SpeechLM(CONFIG, rngs=nnx.Rngs(0)).audio_tower.embed_positions[...])
    length, channels = CONFIG.audio.max_source_positions, CONFIG.audio.d_model
    inv = np.exp(-np.log(10000.0) / (channels // 2 - 1) * np.arange(channels // 2))
    angles = np.arange(length)[:, None] * inv[None, :]
    np.testing.assert_allclose(table, np.concatenate([np.sin(angles), np.cos(angles)], 1),
                               atol=1e-6)
