"""The typed GRPO settings: read once from the `grpo` section, each policy term with the settings
of its own keys only, and every check naming `grpo.<key>`."""

import dataclasses

import pytest

from sallm_jax.configs.base import base_config
from sallm_jax.rl.grpo_settings import GRPOSettings
from sallm_jax.rl.loss_settings import LossSettings
from sallm_jax.rl.policy_terms import POLICY_TERMS, ClipRange, SapoTemperatures, term_defaults


def test_the_section_s_values_become_the_settings():
    section = base_config().grpo
    settings = GRPOSettings.from_section(section)
    for part in (settings, settings.loss, settings.advantages, settings.rewards,
                 settings.entropy_control):
        for field in dataclasses.fields(part):
            if field.name in section:
                assert getattr(part, field.name) == section[field.name], field.name
    assert settings.loss.term == ClipRange(section.epsilon, section.epsilon_high, section.delta)


def test_a_term_reads_only_its_own_keys():
    section = base_config().grpo
    section.loss_type, section.delta = "sapo", 1.1  # a cap the clipped surrogate would refuse
    assert LossSettings.from_section(section).term == SapoTemperatures(1.0, 1.05)
    section.loss_type = "grpo"
    with pytest.raises(ValueError, match=r"^grpo\.delta: expected 0 \(off\) or a cap above"):
        LossSettings.from_section(section)


def test_the_section_holds_every_term_s_keys():
    keys = set(base_config().grpo.keys())
    for term in POLICY_TERMS.values():
        assert {f.name for f in dataclasses.fields(term.settings)} <= keys
    assert set(term_defaults()) <= keys


@pytest.mark.parametrize("keys, message", [
    ({"loss_type": "ppo"}, r"grpo\.loss_type: expected one of \['cispo', 'grpo'"),
    ({"loss_type": "luspo"}, r"grpo\.importance_sampling_level: expected 'sequence' with "
                             r"grpo\.loss_type='luspo'"),
    ({"rollout_correction_max": 0.5}, r"grpo\.rollout_correction_max"),
    ({"beta": -1.0}, r"grpo\.beta: expected a value >= 0"),
])
def test_loss_checks_name_the_key(keys, message):
    with pytest.raises(ValueError, match=message):
        LossSettings.from_section(keys)


@pytest.mark.parametrize("key, value", [("group_size", 1), ("num_off_policy", 8),
                                        ("temperature", 0.0), ("micro_batch_size", -1),
                                        ("scale_rewards", "rank"),
                                        ("reward_weights", (1.0, 2.0)),
                                        ("advantage_estimator", "ppo")])
def test_update_checks_name_the_key(key, value):
    section = base_config().grpo
    section[key] = value
    with pytest.raises(ValueError, match=rf"^grpo\.{key}: expected"):
        GRPOSettings.from_section(section)
