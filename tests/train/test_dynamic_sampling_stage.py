"""grpo.dynamic_sampling in the GRPO stage: with a reward constant on some prompts, those groups
never reach the update and the batch is refilled from later draws, in the order of the data
stream (restated here from the training plan); a short batch trains on what it kept and logs
the shortfall; mixed-policy groups and steps_per_generation go with it; a checkpoint inside a
generation resumes to the uninterrupted run exactly."""

import json
import shutil
import zlib

import jax
import numpy as np
import pytest
from flax import nnx
from sallm_jax.configs.sqa_grpo import get_config

from sallm_jax.data.pipeline import plan_training, screen_rows
from sallm_jax.models.qwen2_audio.model import Qwen2AudioLM
from sallm_jax.parallel.mesh import make_mesh
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.run.experiment import batch_spec, model_config
from sallm_jax.train.grpo_stage import run_grpo
from tests.batch_spec import qwen2_audio_chat

pytestmark = pytest.mark.slow

TIMING = ("step_seconds", "tokens_per_s")
FLAT_REWARD = 0.5


def is_flat(example_id: str) -> bool:
    """The prompts whose reward is the same for every completion (about half of them)."""
    return zlib.crc32(example_id.encode()) % 2 == 0


def flat_on_some_prompts(completion: str, example: dict) -> float:
    """FLAT_REWARD on the `is_flat` prompts; elsewhere a hash of the completion, which differs
    between the distinct samples of an untrained model (and from the ground truth)."""
    if is_flat(example["id"]):
        return FLAT_REWARD
    return zlib.crc32(completion.encode()) % 997 / 997


def train(workdir, small_sqa, *, steps=4, max_draws=3):
    rows, tok = small_sqa
    cfg = get_config("smoke")
    cfg.grpo.steps, cfg.grpo.log_every, cfg.grpo.checkpoint_every = steps, 1, 1
    cfg.grpo.log_completions_every, cfg.grpo.eval_every, cfg.grpo.beta = 1, 0, 0.0
    cfg.grpo.steps_per_generation, cfg.grpo.num_off_policy = 2, 1
    cfg.grpo.learning_rate, cfg.grpo.warmup_steps = 1e-2, 0
    cfg.grpo.reward_fns = (f"{__name__}:flat_on_some_prompts",)
    cfg.grpo.dynamic_sampling, cfg.grpo.dynamic_sampling_max_draws = True, max_draws
    mcfg = model_config(cfg, tok)
    graphdef, params, frozen = nnx.split(Qwen2AudioLM(mcfg, rngs=nnx.Rngs(0)), nnx.Param, ...)
    spec = batch_spec(cfg, mcfg, "grpo.batch_size", cfg.grpo.max_completion_length)
    chat = qwen2_audio_chat(tok)
    trained = run_grpo(cfg.grpo, graphdef=graphdef, params=params, frozen=frozen,
                       ref_params=None, rows=rows["train"], chat=chat, spec=spec,
                       workdir=workdir, seed=0,
                       partitioner=Partitioner(make_mesh({"data": -1}), ()))
    records = [{k: v for k, v in json.loads(line).items() if k not in TIMING}
               for line in (workdir / "metrics.jsonl").open()]
    logged = [json.loads(line) for line in (workdir / "completions.jsonl").open()]
    # The data stream the stage draws from, restated: the training plan's prompts in order.
    plan = plan_training(screen_rows(rows["train"], spec, chat=chat), spec.batch_size,
                         steps * max_draws, seed=0)
    return cfg, jax.tree.map(np.asarray, trained), records, logged, plan, rows["train"]


def expected_steps(plan, rows, batch_size, steps, max_draws):
    """Per step: (ids of the kept prompts, prompts drawn, shortfall), by DAPO's rule: draw
    batches until batch_size prompts with a spread are kept or max_draws are spent."""
    stream, out = iter(plan), []
    for _ in range(steps):
        kept, drawn = [], 0
        while len(kept) < batch_size and drawn < max_draws:
            kept += [rows[i].id for i in next(stream) if not is_flat(rows[i].id)]
            drawn += 1
        out.append((kept[:batch_size], drawn * batch_size, batch_size - len(kept[:batch_size])))
    return out


def check_steps(cfg, records, logged, expected):
    """Each step kept the prompts `expected_steps` names, logged what it drew and lacked."""
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    tables = {t["step"]: t["groups"] for t in logged}  # a step that kept no group has none
    for record, (ids, drawn, short) in zip(records, expected, strict=True):
        groups = tables.get(record["step"], [])
        assert [g["id"] for g in groups] == ids
        assert record["prompts_drawn"] == drawn
        assert record["dynamic_sampling/shortfall"] == short
        if ids:
            assert record["frac_reward_zero_std"] == 0.0
        for group in groups:
            rewards = [s["reward"] for s in group["samples"]]
            assert max(rewards) > min(rewards)
            assert group["samples"][-1]["off_policy"]  # the ground truth, last in its group
        # Prompts of both buckets may share the filled batch: the trainer's log-probs of the
        # padded prompts are still the sampler's.
        assert record["logp_diff/mean"] < 1e-5
        assert np.isfinite(record["loss"])


def test_flat_groups_are_dropped_and_the_batch_refilled(tmp_path, small_sqa):
    cfg, params, records, logged, plan, rows = train(tmp_path / "run", small_sqa)
    expected = expected_steps(plan, rows, cfg.grpo.batch_size, cfg.grpo.steps, 3)
    # Some step could not train on its first draw: flat prompts were replaced.
    assert any(drawn > cfg.grpo.batch_size for _, drawn, _ in expected)
    check_steps(cfg, records, logged, expected)

    # Resume from the checkpoint inside the second generation (after step 3): the same records
    # (prompts drawn included) and final parameters as the run left alone.
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "run", resumed)
    shutil.rmtree(resumed / "checkpoints" / "4")
    _, again, resumed_records, _, _, _ = train(resumed, small_sqa)
    assert resumed_records == records
    for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_batch_short_after_its_draws_trains_on_what_it_kept(tmp_path, small_sqa):
    """One draw per step: a flat prompt is not replaced, its slot leaves the loss (and the
    completions table), and the shortfall is logged."""
    cfg, _, records, logged, plan, rows = train(tmp_path / "run", small_sqa, max_draws=1)
    expected = expected_steps(plan, rows, cfg.grpo.batch_size, cfg.grpo.steps, 1)
    assert any(short > 0 for _, _, short in expected)
    check_steps(cfg, records, logged, expected)
