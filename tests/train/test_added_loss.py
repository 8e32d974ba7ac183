"""A loss added through the policy-term registry alone (the worked example of "Adding a loss"):
its settings become `grpo` keys with their checks, `grpo_loss` applies it, and a smoke GRPO
stage trains with it."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sallm_jax.configs.sqa_grpo import get_config

from sallm_jax.rl.grpo import grpo_loss
from sallm_jax.rl.loss_settings import LossSettings
from sallm_jax.rl.policy_terms import (
    POLICY_TERMS,
    TermInputs,
    TermOutput,
    register_policy_term,
)
from sallm_jax.rl.settings import check, finite
from sallm_jax.run.validate import validate_config
from tests.train.smoke_grpo import run_smoke_grpo


@dataclasses.dataclass(frozen=True)
class ScaledReinforce:
    """The toy loss's own setting, `grpo.reinforce_scale`: the weight of its term."""

    reinforce_scale: float = 0.5

    def __post_init__(self):
        check(finite(self.reinforce_scale) and self.reinforce_scale > 0, "reinforce_scale",
              "a weight > 0", self.reinforce_scale)


def scaled_reinforce_term(x: TermInputs, s: ScaledReinforce) -> TermOutput:
    """-reinforce_scale A log pi: REINFORCE, scaled; nothing is cut."""
    return TermOutput(-s.reinforce_scale * x.adv * x.logp, jnp.zeros_like(x.logp, bool))


@pytest.fixture
def scaled_reinforce():
    """The toy loss registered as "scaled_reinforce" for the test, then removed."""
    register_policy_term("scaled_reinforce", scaled_reinforce_term, ScaledReinforce)
    yield
    POLICY_TERMS.pop("scaled_reinforce")


def test_its_settings_are_config_keys_with_their_checks(scaled_reinforce):
    cfg = get_config("smoke")
    assert cfg.grpo.reinforce_scale == 0.5  # the section gained the field at its default
    cfg.grpo.loss_type = "scaled_reinforce"
    validate_config(cfg)
    cfg.grpo.reinforce_scale = 0.0
    with pytest.raises(ValueError, match=r"grpo\.reinforce_scale: expected a weight > 0"):
        validate_config(cfg)


def test_the_loss_applies_it(scaled_reinforce):
    """On-policy (ratio 1) the clipped surrogate's gradient is -A / n per token; the toy's is
    that times its scale, and its value -scale x the token mean of A log pi."""
    rng = np.random.default_rng(0)
    logp = jnp.asarray(rng.normal(-1.5, 0.5, (3, 4)), jnp.float32)
    adv, mask = jnp.array([1.0, -0.5, 2.0]), jnp.ones((3, 4))
    settings = LossSettings.from_section({"loss_type": "scaled_reinforce",
                                          "reinforce_scale": 0.25})

    def loss(lp, s):
        return grpo_loss(lp, jax.lax.stop_gradient(lp), None, adv, mask, s)

    value, metrics = loss(logp, settings)
    assert float(value) == pytest.approx(float(-0.25 * (adv[:, None] * logp).mean()), rel=1e-6)
    assert float(metrics["clip_fraction"]) == 0.0
    np.testing.assert_allclose(jax.grad(lambda lp: loss(lp, settings)[0])(logp),
                               0.25 * jax.grad(lambda lp: loss(lp, LossSettings())[0])(logp),
                               rtol=1e-6)


@pytest.mark.slow
def test_a_smoke_grpo_stage_trains_with_it(scaled_reinforce, tmp_path, small_sqa):
    cfg = get_config("smoke")
    cfg.grpo.loss_type, cfg.grpo.reinforce_scale = "scaled_reinforce", 2.0
    cfg.grpo.steps, cfg.grpo.log_every, cfg.grpo.reward_fns = 2, 1, ("chrf",)
    validate_config(cfg)
    _, records = run_smoke_grpo(cfg, tmp_path, small_sqa)
    assert len(records) == 2
    for record in records:
        assert np.isfinite(record["loss"]) and record["grad_norm"] > 0
        assert record["clip_fraction"] == 0.0
