"""The stage registry: each stage owns the config section of its name (its defaults and its
checks), and a stage on the task selects its best parameters on its own `select_on`."""

import types

import pytest
from sallm_jax.configs.base import base_config
from sallm_jax.configs.sqa_grpo import get_config

from sallm_jax.run.validate import validate_config
from sallm_jax.stages import STAGES, training_stages
from sallm_jax.stages.common import stage_inputs


def test_each_stage_owns_the_section_of_its_name():
    cfg = base_config()
    for name, stage in STAGES.items():
        assert cfg[name].to_dict() == stage.defaults().to_dict()
        stage.check(cfg, name)
    assert training_stages() == ("base", "warmup", "sft", "grpo")
    assert "rl" not in cfg


@pytest.mark.parametrize("name, key", [("warmup", "steps"), ("sft", "batch_size"),
                                       ("grpo", "group_size"), ("eval", "batch_size")])
def test_a_stage_s_check_names_its_own_section(name, key):
    cfg = get_config("smoke")
    cfg[name][key] = 0
    with pytest.raises(ValueError, match=rf"^{name}\.{key}: expected"):
        STAGES[name].check(cfg, name)
    with pytest.raises(ValueError, match=rf"^{name}\.{key}: expected"):
        validate_config(cfg)


@pytest.mark.parametrize("name", ["warmup", "sft", "grpo"])
def test_a_stage_validates_on_its_own_select_on(name, tmp_path):
    cfg = get_config("smoke")
    for stage, metric in (("warmup", "chrf"), ("sft", "rouge_l"), ("grpo", "meteor")):
        cfg[stage].select_on, cfg[stage].eval_every = metric, 2
    experiment = types.SimpleNamespace(
        cfg=cfg, graphdef=None, frozen=None, splits={"train": []}, chat=None,
        spec=lambda section, tokens: (section, tokens), workdir=tmp_path, partitioner=None,
        skip_log=None, validator=lambda metric: metric)
    inputs = stage_inputs(experiment, name, 8)
    assert inputs["validate"] == cfg[name].select_on
    assert inputs["spec"] == (name, 8) and inputs["workdir"] == tmp_path / name
