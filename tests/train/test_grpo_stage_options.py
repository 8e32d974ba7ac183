"""The adaptive entropy coefficient and the rollout correction through the GRPO stage: the
coefficient follows its rule step by step and resumes from a checkpoint exactly, and a
bfloat16 sampler's gap to the float32 trainer is measured, corrected and logged."""

import shutil

import jax
import numpy as np
import pytest
from sallm_jax.configs.sqa_grpo import get_config

from sallm_jax.run.validate import validate_config
from tests.train.smoke_grpo import run_smoke_grpo

pytestmark = pytest.mark.slow


def train(workdir, small_sqa, steps=3):
    """GRPO steps of the smoke preset with both options on: (params, records)."""
    cfg = get_config("smoke")
    cfg.grpo.steps, cfg.grpo.log_every, cfg.grpo.checkpoint_every = steps, 1, 1
    cfg.grpo.learning_rate, cfg.grpo.warmup_steps, cfg.grpo.reward_fns = 1e-2, 0, ("chrf",)
    cfg.grpo.use_adaptive_entropy, cfg.grpo.entropy_coef = True, 0.01
    cfg.grpo.entropy_target = 100.0
    cfg.grpo.entropy_coef_max = 0.02
    cfg.grpo.rollout_dtype, cfg.grpo.rollout_correction = "bfloat16", "token_truncate"
    cfg.grpo.rollout_correction_min, cfg.grpo.rollout_correction_max = 0.999, 1.001
    validate_config(cfg)
    return run_smoke_grpo(cfg, workdir, small_sqa)


def test_both_options_through_the_stage_and_a_resume(tmp_path, small_sqa):
    params, records = train(tmp_path / "run", small_sqa)
    # The entropy (a few nats) is below the target: the coefficient rises by delta each step
    # up to its bound, and is applied from the second step on (nothing measured before).
    assert [r["entropy_coef"] for r in records] == pytest.approx([0.015, 0.02, 0.02])
    assert [r["entropy_coef/applied"] for r in records] == pytest.approx([0.0, 0.015, 0.02])
    # The bfloat16 sampler differs from the float32 trainer by more than float32 noise, and the
    # bounds [0.999, 1.001] truncate some of the weights (the gap is ~1e-3 nats per token).
    assert all(r["logp_diff/mean"] > 1e-4 for r in records)
    assert all(0 < r["rollout_is/outside_fraction"] < 1 for r in records)
    low, high = np.float32(0.999), np.float32(1.001)  # the bounds as float32 clips to them
    assert all(low <= r["rollout_is/min"] <= r["rollout_is/max"] <= high for r in records)

    # Resume after step 2: the same records (the coefficient included) and final parameters.
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "run", resumed)
    shutil.rmtree(resumed / "checkpoints" / "3")
    again, resumed_records = train(resumed, small_sqa)
    assert resumed_records == records
    for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)
