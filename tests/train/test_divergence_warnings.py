"""A collapse like grpo.learning_rate=1e4's is announced while it happens, though it stays below the
absolute bands (KL 1.0, gradient norm 1e3): a gradient norm or KL far above its own recent
median, and a validation score that falls to half the best or lower, are warnings."""

from __future__ import annotations

import logging

import jax.numpy as jnp
import numpy as np

from sallm_jax.parallel.mesh import make_mesh
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.train.best import BestKeeper
from sallm_jax.train.health import HealthCheck


def feed(health, grad_norms, kls):
    for step, (grad_norm, kl) in enumerate(zip(grad_norms, kls, strict=True), start=1):
        health.after_step(step, {"finite": np.bool_(True), "loss": 1.0, "grad_norm": grad_norm,
                                 "kl": kl})


def warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_spike_of_the_gradient_norm_or_the_kl_is_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        feed(HealthCheck(stage="grpo"), [2.0, 2.5, 1.8, 60.0], [0.0, 0.002, 0.003, 0.4])
    # Medians of the steps before: 2.0 (gradient norm), 0.002 (KL).
    assert warnings(caplog) == [
        "[grpo] step 4: gradient norm 60 is 30x its median over the last 3 steps (2); "
        "beyond train.warn_spike_factor=10, the update may be diverging (a learning rate too "
        "high?)",
        "[grpo] step 4: KL to the reference 0.4 is 200x its median over the last 3 steps "
        "(0.002); beyond train.warn_spike_factor=10, the update may be diverging (a learning "
        "rate too high?)"]


def test_ordinary_noise_and_the_first_steps_are_quiet(caplog):
    with caplog.at_level(logging.WARNING):
        feed(HealthCheck(stage="grpo"), [0.5, 30.0, 2.0, 3.0, 2.5, 4.0, 3.5, 19.0],
             [0.0, 0.05, 0.01, 0.02, 0.015, 0.03, 0.02, 0.1])
    assert warnings(caplog) == []


def test_a_validation_score_falling_to_half_the_best_is_a_warning(tmp_path, caplog):
    scores = {0: 10.326, 1: 9.0, 2: 0.0}
    keeper = BestKeeper(tmp_path / "best", lambda p: scores[int(p["w"][0])],
                        Partitioner(make_mesh({"data": -1}), ()))
    with caplog.at_level(logging.WARNING):
        keeper.start(0, {"w": jnp.array([0.0])})
        keeper.consider(25, {"w": jnp.array([1.0])})
        assert warnings(caplog) == []
        keeper.consider(50, {"w": jnp.array([2.0])})
    assert warnings(caplog) == [
        "[best] step 50: validation score 0.000 is half the best or less (10.326 at step 0): "
        "the policy may have collapsed (a learning rate too high?)"]
