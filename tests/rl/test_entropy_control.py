"""The adaptive entropy coefficient (Skywork-OR1's adaptive entropy control, arXiv 2505.22312,
as TRL's `use_adaptive_entropy`) against a NumPy restatement of its rule, a hand-computed run,
its gradient in the loss, the GRPO update that carries it, and a resume that continues it
exactly."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from sallm_jax.configs.base import base_config

from sallm_jax.models.qwen2_audio.model import Qwen2AudioLM
from sallm_jax.parallel.mesh import make_mesh
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.rl.entropy_control import (
    applied_coefficient,
    init_entropy_control,
    next_entropy_control,
)
from sallm_jax.rl.grpo import grpo_loss
from sallm_jax.rl.grpo_settings import GRPOSettings
from sallm_jax.rl.loss_settings import LossSettings
from sallm_jax.run.validate import validate_config
from sallm_jax.train.checkpoint import Checkpointer
from sallm_jax.train.grpo_update import make_grpo_update
from sallm_jax.train.state import sharded_train_state
from tests.train.test_microbatch import CONFIG, G, inputs


def numpy_controller(entropies, *, coef, target, delta, lo, hi):
    """TRL's rule, restated: update k applies a_k = c_k if H_{k-1} <= target else 0 (H_{-1} =
    +inf: nothing before the first update's measurement); after it,
    c_{k+1} = min(c_k + delta, hi) if H_k <= target else max(c_k - delta, lo).
    Returns ([a_k], [c_{k+1}])."""
    applied, coefs, last = [], [], np.inf
    for h in entropies:
        applied.append(coef if last <= target else 0.0)
        coef = min(coef + delta, hi) if h <= target else max(coef - delta, lo)
        coefs.append(coef)
        last = h
    return applied, coefs


def run_controller(entropies, *, coef, target, delta, lo, hi):
    control, applied, coefs = init_entropy_control(coef), [], []
    for h in entropies:
        applied.append(float(applied_coefficient(control, target)))
        control = next_entropy_control(control, jnp.float32(h), target=target, delta=delta,
                                       coef_min=lo, coef_max=hi)
        coefs.append(float(control.coef))
    return applied, coefs


def test_controller_matches_numpy_restatement():
    rng = np.random.default_rng(0)
    entropies = rng.uniform(0.0, 1.0, 40).astype(np.float32)
    entropies[7] = 0.5  # at the target: counts as at or below it
    kw = dict(coef=0.02, target=0.5, delta=0.005, lo=0.001, hi=0.03)
    applied, coefs = run_controller(entropies, **kw)
    expected_applied, expected_coefs = numpy_controller(entropies.tolist(), **kw)
    np.testing.assert_allclose(applied, expected_applied, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(coefs, expected_coefs, rtol=1e-6, atol=1e-8)
    assert min(expected_coefs) == pytest.approx(0.001) and max(expected_coefs) == 0.03


def test_controller_hand_computed():
    """c_0 = 0.004, target 0.5, delta 0.005, bounds [0, 0.012], entropies 0.9, 0.3, 0.1, 0.2,
    0.8: update 1 applies nothing (no earlier measurement) and, H = 0.9 being above the target,
    c = max(0.004 - 0.005, 0) = 0; update 2 applies nothing (H_1 = 0.9 > 0.5), c = 0.005;
    update 3 applies 0.005, c = 0.010; update 4 applies 0.010, c = min(0.015, 0.012) = 0.012;
    update 5 applies 0.012 and H = 0.8 lowers c to 0.007."""
    applied, coefs = run_controller([0.9, 0.3, 0.1, 0.2, 0.8], coef=0.004, target=0.5,
                                    delta=0.005, lo=0.0, hi=0.012)
    np.testing.assert_allclose(applied, [0, 0, 0.005, 0.010, 0.012], atol=1e-8)
    np.testing.assert_allclose(coefs, [0, 0.005, 0.010, 0.012, 0.007], atol=1e-8)


def test_applied_coefficient_in_the_loss_values_and_gradients():
    """The loss takes the coefficient as an array (it comes from the train state): the bonus
    is -a H per token, so d loss / d H = -a mask / sum(mask) under DAPO; gated off, none."""
    rng = np.random.default_rng(2)
    logp = rng.normal(-1.5, 0.5, (3, 4)).astype(np.float32)
    entropy = rng.uniform(0.5, 2.0, (3, 4)).astype(np.float32)
    adv, mask = np.array([0.5, -1.0, 0.2], np.float32), np.ones((3, 4), np.float32)
    mask[2, 1:] = 0

    def loss(h, coef):
        return grpo_loss(jnp.asarray(logp), jnp.asarray(logp), None, jnp.asarray(adv),
                         jnp.asarray(mask), LossSettings(entropy_coef=coef), entropy=h)[0]

    for last, a in ((0.1, 0.07), (0.9, 0.0)):  # measured at or below the target, above it
        control = init_entropy_control(0.07)._replace(last_entropy=jnp.float32(last))
        coef = applied_coefficient(control, 0.5)
        value, d_h = jax.jit(jax.value_and_grad(loss))(jnp.asarray(entropy), coef)
        plain = float(loss(jnp.asarray(entropy), 0.0))  # the policy term alone
        np.testing.assert_allclose(value, plain - a * (entropy * mask).sum() / mask.sum(),
                                   rtol=1e-6)
        np.testing.assert_allclose(d_h, -a * mask / mask.sum(), rtol=1e-6, atol=1e-9)


def adaptive_cfg(**settings):
    cfg = base_config().grpo
    cfg.update({"group_size": G, "temperature": 1.0, "beta": 0.0, "num_off_policy": 0,
                "use_adaptive_entropy": True, "entropy_coef": 0.01, "entropy_target": 10.0,
                "entropy_coef_delta": 0.005, "entropy_coef_min": 0.0, "entropy_coef_max": 0.02,
                **settings})
    return cfg


def updates(cfg, state=None, count=1):
    """`count` GRPO updates of the tiny model (AdamW) from `state` (default: a fresh one with
    the controller's initial state); (state, [metrics], a fresh state's shapes)."""
    partitioner = Partitioner(make_mesh({"data": -1}), ())
    graphdef, params, frozen = nnx.split(Qwen2AudioLM(CONFIG, rngs=nnx.Rngs(0)), nnx.Param, ...)
    tx = optax.adamw(1e-3)
    fresh, shardings = sharded_train_state(
        partitioner, params, tx, copy=True,
        extras={"entropy_control": init_entropy_control(cfg.entropy_coef)})
    update = make_grpo_update(graphdef, tx, GRPOSettings.from_section(cfg),
                              partitioner, shardings,
                              partitioner.param_shardings(frozen))
    batch, group, _ = inputs()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                           sharding=x.sharding), fresh)
    state, history = fresh if state is None else state, []
    for _ in range(count):
        state, metrics = update(state, frozen, partitioner.to_global(batch),
                                partitioner.to_global(group), None, None)
        history.append(jax.device_get(metrics))
    return state, history, abstract


def test_update_carries_the_controller():
    """Through the GRPO update: the state's coefficient follows the rule driven by the entropy
    each update measured (all sampled tokens: the logged `entropy`), the first update applies
    none, and the logs hold c_{k+1} and a_k."""
    cfg = adaptive_cfg()
    state, history, _ = updates(cfg, count=3)
    measured = [float(m["entropy"]) for m in history]
    applied, coefs = numpy_controller(measured, coef=0.01, target=10.0, delta=0.005, lo=0.0,
                                      hi=0.02)
    assert coefs == pytest.approx([0.015, 0.02, 0.02])  # raised, then held at the bound
    np.testing.assert_allclose([m["entropy_coef"] for m in history], coefs, rtol=1e-6)
    np.testing.assert_allclose([m["entropy_coef/applied"] for m in history], applied,
                               rtol=1e-6)
    control = state.extras["entropy_control"]
    assert float(control.coef) == pytest.approx(0.02)
    assert float(control.last_entropy) == pytest.approx(measured[-1], rel=1e-6)


def test_controller_survives_a_checkpoint_exactly(tmp_path):
    """Two updates, a checkpoint, a restore into a fresh state's structure and two more: the
    same controller and parameters as four updates in a row."""
    # Amid the tiny model's entropies (4.1525-4.1531 nats): the coefficient rises and falls.
    cfg = adaptive_cfg(entropy_target=4.1528)
    straight, history, _ = updates(cfg, count=4)
    half, _, abstract = updates(cfg, count=2)
    with Checkpointer(tmp_path / "ckpt", save_every=1) as ckpt:
        ckpt.save(2, half, force=True)
    with Checkpointer(tmp_path / "ckpt", save_every=1) as ckpt:
        restored = ckpt.restore(abstract)
    assert float(restored.extras["entropy_control"].coef) == float(
        half.extras["entropy_control"].coef)
    resumed, _, _ = updates(cfg, restored, count=2)
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(straight), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    steps = np.diff([0.01] + [float(m["entropy_coef"]) for m in history])
    assert (steps > 0).any() and (steps < 0).any()
    assert float(resumed.extras["entropy_control"].coef) == float(history[-1]["entropy_coef"])


def test_option_checks():
    validate_config(base_config())  # off by default
    good = base_config()
    good.grpo.use_adaptive_entropy = True
    validate_config(good)
    for key, value in [("entropy_target", 0.0), ("entropy_coef_delta", 0.0),
                       ("entropy_coef_min", -0.1), ("entropy_coef_max", 0.5e-3),
                       ("entropy_coef", 2.0)]:
        bad = base_config()
        bad.grpo.use_adaptive_entropy, bad.grpo.entropy_coef_min = True, 1e-3
        bad.grpo.entropy_coef = 1e-3
        bad.grpo[key] = value
        with pytest.raises(ValueError, match=rf"grpo\.{key}"):
            validate_config(bad)
