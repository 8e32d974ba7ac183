"""Non-finite steps are never applied, and the health check stops, skips or warns by policy."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sallm_jax.train.health import HealthCheck, TrainingDiverged
from sallm_jax.train.state import apply_gradients, create_train_state

PARAMS = {"w": jnp.array([1.0, -2.0, 3.0])}
TX = optax.adamw(0.1)


@pytest.mark.parametrize("loss, grad", [(jnp.nan, 1.0), (1.0, jnp.inf), (1.0, jnp.nan)])
def test_non_finite_step_keeps_the_last_good_state(loss, grad):
    state = create_train_state(PARAMS, TX)
    grads = {"w": jnp.array([0.5, grad, 0.5])}
    after, finite = apply_gradients(state, grads, TX, jnp.asarray(loss))
    assert not bool(finite) and int(after.step) == 1
    np.testing.assert_array_equal(after.params["w"], PARAMS["w"])
    for a, b in zip(jax.tree.leaves(after.opt_state), jax.tree.leaves(state.opt_state),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_finite_step_is_the_optimisers_update():
    state = create_train_state(PARAMS, TX)
    grads = {"w": jnp.array([0.5, -1.0, 0.25])}
    after, finite = apply_gradients(state, grads, TX, jnp.asarray(2.0))
    updates, _ = TX.update(grads, TX.init(PARAMS), PARAMS)
    assert bool(finite)
    np.testing.assert_allclose(after.params["w"], optax.apply_updates(PARAMS, updates)["w"])


def metrics(finite=True, grad_norm=1.0, **more):
    return {"finite": np.bool_(finite), "loss": 1.0, "grad_norm": grad_norm, **more}


def test_stop_names_the_step():
    health = HealthCheck(stage="grpo")
    health.after_step(1, metrics())
    with pytest.raises(TrainingDiverged, match=r"\[grpo\] step 2: non-finite.*step 1"):
        health.after_step(2, metrics(finite=False, grad_norm=float("nan")))


def test_skip_counts_and_stops_after_too_many_in_a_row(caplog):
    health = HealthCheck(stage="sft", on_nonfinite="skip", max_nonfinite_skips=2)
    with caplog.at_level(logging.WARNING):
        health.after_step(1, metrics(finite=False))
        health.after_step(2, metrics())  # a good step resets the run of skips
        health.after_step(3, metrics(finite=False))
        health.after_step(4, metrics(finite=False))
    assert health.skipped == 3 and "skipped: 3 so far" in caplog.text
    with pytest.raises(TrainingDiverged, match="3 steps in a row"):
        health.after_step(5, metrics(finite=False))


def test_warnings_for_zero_gradients_large_norms_and_kl(caplog):
    health = HealthCheck(stage="grpo", warn_zero_grad_steps=2, warn_kl_above=0.5,
                         warn_grad_norm_above=10.0)
    with caplog.at_level(logging.WARNING):
        health.after_step(1, metrics(grad_norm=0.0))
        assert "exactly 0" not in caplog.text
        health.after_step(2, metrics(grad_norm=0.0))
        assert "exactly 0 for 2 steps" in caplog.text
        health.after_step(3, metrics(grad_norm=50.0, kl=0.8))
    assert "gradient norm 50 above 10" in caplog.text
    assert "KL to the reference 0.8 above 0.5" in caplog.text
