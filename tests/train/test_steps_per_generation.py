"""grpo.steps_per_generation: a generation's first update is the one plain GRPO makes on the same
prompts; the ratio is live (not 1) only from its second update on; a checkpoint inside a
generation resumes to the uninterrupted result exactly."""

import shutil

import jax
import numpy as np
import pytest

from sallm_jax.configs.sqa_grpo import get_config
from tests.train.smoke_grpo import run_smoke_grpo

pytestmark = pytest.mark.slow


def train(workdir, small_sqa, steps_per_generation, steps=4):
    """GRPO steps on the smoke preset from one fixed initialisation: (params, records)."""
    cfg = get_config("smoke")
    cfg.grpo.steps, cfg.grpo.log_every, cfg.grpo.checkpoint_every = steps, 1, 1
    cfg.grpo.steps_per_generation, cfg.grpo.beta = steps_per_generation, 0.0
    # The full rate from the first update on, and a reward with a spread on an untrained
    # model (chrF; BLEU would be 0 everywhere), so that every update moves the parameters.
    cfg.grpo.learning_rate, cfg.grpo.warmup_steps, cfg.grpo.reward_fns = 1e-2, 0, ("chrf",)
    return run_smoke_grpo(cfg, workdir, small_sqa)


def test_generations_of_two_steps(tmp_path, small_sqa):
    _, plain = train(tmp_path / "plain", small_sqa, 1, steps=2)
    generated, records = train(tmp_path / "two", small_sqa, 2)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    # The first update of a generation is plain GRPO's on the same batch and samples.
    assert records[0] == plain[0]
    # Ratio exactly 1 at the sampler's parameters only: the first step of each generation.
    assert [r["ratio_mean"] == 1.0 for r in records] == [True, False, True, False]
    assert all(abs(r["ratio_mean"] - 1.0) > 1e-5 for r in records[1::2])
    assert all(r["ratio_mean"] == 1.0 for r in plain)
    # The second batch was sampled before the first update: its sampler-vs-trainer gap is
    # taken against the old log-probs (the sampler's parameters), so it stays at float noise.
    assert all(r["logp_diff/mean"] < 1e-5 for r in records)

    # Resume from the checkpoint inside the second generation (after step 3): the same final
    # parameters and step-4 record as the run left alone. Only generation 2 is kept on disk.
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "two", resumed)
    assert sorted(p.name for p in (resumed / "generations").iterdir()) == ["2"]
    shutil.rmtree(resumed / "checkpoints" / "4")
    again, resumed_records = train(resumed, small_sqa, 2)
    assert resumed_records == records
    for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(generated), strict=True):
        np.testing.assert_array_equal(a, b)
