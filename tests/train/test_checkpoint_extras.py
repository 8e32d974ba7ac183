"""TrainState.extras in checkpoints: a state with extras comes back with them, and a
checkpoint written before TrainState had them restores into a state that holds none."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from sallm_jax.rl.entropy_control import init_entropy_control
from sallm_jax.train.checkpoint import Checkpointer
from sallm_jax.train.state import TrainState, create_train_state

PARAMS = {"w": jnp.arange(3, dtype=jnp.float32)}
TX = optax.adam(1e-3)


class OldTrainState(NamedTuple):
    """TrainState as it was before `extras`."""

    step: jax.Array
    params: dict
    opt_state: optax.OptState


def abstract(state):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                        state)


def test_extras_round_trip(tmp_path):
    control = init_entropy_control(0.25)._replace(last_entropy=jnp.float32(1.5))
    state = create_train_state(PARAMS, TX, {"entropy_control": control})._replace(
        step=jnp.int32(7))
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        ckpt.save(7, state, force=True)
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        restored = ckpt.restore(abstract(create_train_state(PARAMS, TX, {
            "entropy_control": init_entropy_control(0.0)})))
    assert isinstance(restored, TrainState)
    assert float(restored.extras["entropy_control"].coef) == 0.25
    assert float(restored.extras["entropy_control"].last_entropy) == 1.5


def test_a_checkpoint_from_before_extras_restores(tmp_path):
    old = OldTrainState(jnp.int32(5), {"w": jnp.ones(3)}, TX.init(PARAMS))
    manager = ocp.CheckpointManager(tmp_path, item_names=("state", "data"),
                                    options=ocp.CheckpointManagerOptions(create=True))
    manager.save(5, args=ocp.args.Composite(state=ocp.args.StandardSave(old)))
    manager.wait_until_finished()
    manager.close()
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        restored = ckpt.restore(abstract(create_train_state(PARAMS, TX)))
    assert isinstance(restored, TrainState) and restored.extras == {}
    assert int(restored.step) == 5
    np.testing.assert_array_equal(restored.params["w"], np.ones(3))
