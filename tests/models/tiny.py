"""One tiny JAX model per registered family, for the model tests that need no transformers: its
config, a padded batch for it, random weights, and one jitted forward for all of them.

A family registered in `sallm_jax.models.families` is tested here once it has an entry in `TINY`
(and, for the comparisons against transformers, one in `hf_tiny.TINY_CHECKPOINTS`).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sallm_jax.models.families import families, family_for_config
from sallm_jax.models.granite_speech.config import (
    GraniteEncoderConfig,
    GraniteProjectorConfig,
    GraniteSpeechConfig,
    GraniteTextConfig,
)
from sallm_jax.models.qwen2_audio.config import AudioEncoderConfig, Qwen2AudioConfig
from sallm_jax.models.qwen2_config import TextConfig

AUDIO_ID = 47  # the last id of every tiny vocabulary (48)
FEATURE_FRAMES = 12  # feature frames of each clip in `padded_batch`

# Whole-program jit: on a 2-core CPU, eager mode would compile every op separately (seconds).
forward = nnx.jit(lambda model, *args: model(*args))


@dataclasses.dataclass(frozen=True)
class TinyModel:
    """A family's tiny config, how many of `padded_batch`'s FEATURE_FRAMES frames are valid, and
    how far bfloat16 compute may move its logits on that batch."""

    config: object
    valid_frames: int
    bfloat16_atol: float


# model_type -> its tiny model: a 2-layer decoder of width 32 over a vocabulary of 48.
TINY = {
    "qwen2_audio": TinyModel(
        Qwen2AudioConfig(
            audio=AudioEncoderConfig(num_mel_bins=8, d_model=16, encoder_layers=1,
                                     encoder_attention_heads=2, encoder_ffn_dim=32,
                                     max_source_positions=20),
            text=TextConfig(vocab_size=48, hidden_size=32, intermediate_size=64,
                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
            audio_token_id=AUDIO_ID,
        ),
        valid_frames=10,  # 2 audio tokens
        bfloat16_atol=2e-2,
    ),
    "granite_speech": TinyModel(
        GraniteSpeechConfig(
            encoder=GraniteEncoderConfig(num_layers=2, hidden_dim=16, feedforward_mult=2,
                                         num_heads=2, output_dim=6, context_size=8,
                                         max_pos_emb=8, conv_kernel_size=5),
            projector=GraniteProjectorConfig(hidden_size=16, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=24,
                                             encoder_hidden_size=16, cross_attention_frequency=1),
            text=GraniteTextConfig(vocab_size=48, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, embedding_multiplier=6.0,
                                   attention_multiplier=0.25, residual_multiplier=0.5,
                                   logits_scaling=2.0),
            audio_token_id=AUDIO_ID,
        ),
        valid_frames=12,  # ceil(12 / 15) * 3 = 3 audio tokens
        bfloat16_atol=5e-2,
    ),
}

# The registered families, sorted: what the family tests are parametrised over.
FAMILY_TYPES = sorted(families())


def random_model(config, dtype=jnp.float32) -> nnx.Module:
    """`config`'s family model with N(0, 0.1) parameters drawn by NumPy and BatchNorm statistics
    (mean 0.1, var 1.5), where it has any.

    Built abstractly and filled, because the real initialiser compiles one random-number program
    per parameter shape, which costs several seconds on a small CPU; std 0.1 (not 0.02) also gives
    attention logits of order one, so masking errors show. The same config gives the same draws
    whatever `dtype`.
    """
    model_class = family_for_config(config).model_class
    model = nnx.eval_shape(lambda: model_class(config, rngs=nnx.Rngs(0), dtype=dtype))
    rng = np.random.default_rng(0)
    params = jax.tree.map(
        lambda x: jnp.asarray(0.1 * rng.standard_normal(x.shape), x.dtype),
        nnx.state(model, nnx.Param),
    )
    stats = jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.full(x.shape, 1.5 if "var" in str(path[-1]) else 0.1, x.dtype),
        nnx.state(model, nnx.BatchStat),
    )
    nnx.update(model, params, stats)
    return model


def prompt_row(model_type: str) -> list[int]:
    """A prompt holding the audio placeholders of one `padded_batch` clip between text ids."""
    tiny = TINY[model_type]
    family = family_for_config(tiny.config)
    audio_tokens = int(family.audio_tokens(tiny.config, tiny.valid_frames))
    return [3, 8, *[AUDIO_ID] * audio_tokens, 11, 12]


@functools.cache
def padded_batch(model_type: str) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(ids, mask, features, lengths) of two copies of `prompt_row` and one clip: row 0 behind 3
    left-padding tokens, row 1 before 3 right-padding ones."""
    tiny = TINY[model_type]
    row = prompt_row(model_type)
    ids = jnp.array([[0, 0, 0, *row], [*row, 0, 0, 0]], jnp.int32)
    mask = jnp.array([[0, 0, 0] + [1] * len(row), [1] * len(row) + [0, 0, 0]], jnp.int32)
    width = family_for_config(tiny.config).input_width(tiny.config)
    features = jnp.tile(jax.random.normal(jax.random.key(2), (1, FEATURE_FRAMES, width)),
                        (2, 1, 1))
    lengths = jnp.array([tiny.valid_frames] * 2, jnp.int32)
    return ids, mask, features, lengths
