"""Orbax checkpoints: the train state and the data iterator position round-trip exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from sallm_jax.data.pipeline import BatchSpec, training_dataset
from sallm_jax.train.checkpoint import Checkpointer
from sallm_jax.train.state import TrainState, apply_gradients, create_train_state
from tests.batch_spec import QWEN2_AUDIO_TOKENS, qwen2_audio_chat


class TwoLayer(nnx.Module):
    def __init__(self, rngs):
        self.a = nnx.Linear(3, 4, rngs=rngs)
        self.b = nnx.Linear(4, 2, rngs=rngs)


def test_state_and_iterator_round_trip(tmp_path, small_sqa):
    rows, tok = small_sqa
    spec = BatchSpec(batch_size=2, audio_buckets_s=(3.0, 5.0), max_prompt_text_tokens=48,
                     max_target_tokens=16, num_audio_tokens=QWEN2_AUDIO_TOKENS)
    ds = training_dataset(rows["train"], qwen2_audio_chat(tok), spec, num_batches=10, seed=0)
    it = iter(ds)
    _, params = nnx.split(TwoLayer(nnx.Rngs(0)))
    tx = optax.adamw(1e-2)
    state = create_train_state(params, tx)
    grads = jax.tree.map(jnp.ones_like, params)
    for _ in range(3):
        state, _ = apply_gradients(state, grads, tx, jnp.asarray(1.0))
        next(it)
    ckpt = Checkpointer(tmp_path / "ckpt", save_every=1)
    assert ckpt.save(3, state, it, force=True)
    ckpt.wait()
    expected_next = next(it)["index"]

    fresh_it = iter(ds)
    fresh = create_train_state(nnx.split(TwoLayer(nnx.Rngs(1)))[1], tx)
    restored = Checkpointer(tmp_path / "ckpt", save_every=1).restore(fresh, fresh_it)
    assert isinstance(restored, TrainState) and int(restored.step) == 3
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(next(fresh_it)["index"], expected_next)
