"""grpo.sync_ref_model in the GRPO stage: the reference kept in the checkpoints is TR-DPO's mix
alpha x policy + (1 - alpha) x reference at every ref_model_sync_steps-th update (restated in
NumPy from the checkpointed policy and the starting parameters) and unchanged between syncs; a
resume goes on from the checkpointed reference exactly; alpha = 1 every update makes the
reference the policy before each update, so the KL is 0."""

import json
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from sallm_jax.configs.sqa_grpo import get_config

from sallm_jax.models.qwen2_audio.model import Qwen2AudioLM
from sallm_jax.parallel.mesh import make_mesh
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.run.experiment import batch_spec, model_config
from sallm_jax.train.grpo_stage import run_grpo
from tests.batch_spec import qwen2_audio_chat

pytestmark = pytest.mark.slow


def train(workdir, small_sqa, *, steps, alpha, every, sync=True):
    """(starting params, final params, records) of a GRPO run with a moving reference."""
    rows, tok = small_sqa
    cfg = get_config("smoke")
    cfg.grpo.steps, cfg.grpo.log_every, cfg.grpo.checkpoint_every = steps, 1, 1
    cfg.grpo.eval_every = 0
    cfg.grpo.beta, cfg.grpo.learning_rate, cfg.grpo.warmup_steps = 0.04, 1e-2, 0
    cfg.grpo.reward_fns = ("chrf",)  # a spread on an untrained model: every update moves
    cfg.grpo.sync_ref_model = sync
    cfg.grpo.ref_model_mixup_alpha, cfg.grpo.ref_model_sync_steps = alpha, every
    mcfg = model_config(cfg, tok)
    graphdef, params, frozen = nnx.split(Qwen2AudioLM(mcfg, rngs=nnx.Rngs(0)), nnx.Param, ...)
    start = jax.tree.map(np.asarray, params)
    trained = run_grpo(cfg.grpo, graphdef=graphdef, params=params, frozen=frozen,
                       ref_params=params, rows=rows["train"], chat=qwen2_audio_chat(tok),
                       spec=batch_spec(cfg, mcfg, "grpo.batch_size",
                                       cfg.grpo.max_completion_length),
                       workdir=workdir, seed=0,
                       partitioner=Partitioner(make_mesh({"data": -1}), ()))
    records = [{k: v for k, v in json.loads(line).items()
                if k not in ("step_seconds", "tokens_per_s")}
               for line in (workdir / "metrics.jsonl").open()]
    return start, jax.tree.map(np.asarray, trained), records


def checkpointed(workdir, step):
    """(policy leaves, reference leaves) of the train state saved after `step`, as saved."""
    state = ocp.PyTreeCheckpointer().restore((workdir / "checkpoints" / str(step) / "state")
                                             .absolute())
    return jax.tree.leaves(state["params"]), jax.tree.leaves(state["extras"]["reference"])


def test_the_reference_mixes_at_each_sync_and_resumes(tmp_path, small_sqa):
    start, final, records = train(tmp_path / "run", small_sqa, steps=3, alpha=0.6, every=2)
    start = jax.tree.leaves(start)
    policy2, ref2 = checkpointed(tmp_path / "run", 2)
    policy3, ref3 = checkpointed(tmp_path / "run", 3)
    # Synced after update 2: 0.6 x the policy then + 0.4 x the start (the reference until then).
    for p, r, s in zip(policy2, ref2, start, strict=True):
        np.testing.assert_allclose(r, 0.6 * p + 0.4 * s, rtol=1e-6, atol=1e-7)
    assert any(np.abs(r - s).max() > 1e-4 for r, s in zip(ref2, start, strict=True))
    # Not after update 3: the reference stays, while the policy moved on.
    for a, b in zip(ref3, ref2, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(np.abs(a - b).max() > 1e-4 for a, b in zip(policy3, policy2, strict=True))

    # Resume from the step-2 checkpoint: step 3 and the final parameters come out the same.
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "run", resumed)
    shutil.rmtree(resumed / "checkpoints" / "3")
    _, again, resumed_records = train(resumed, small_sqa, steps=3, alpha=0.6, every=2)
    assert resumed_records == records
    for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(final), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(checkpointed(resumed, 3)[1], ref3, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_hard_update_every_step_leaves_no_kl(tmp_path, small_sqa):
    _, _, synced = train(tmp_path / "synced", small_sqa, steps=3, alpha=1.0, every=1)
    _, _, fixed = train(tmp_path / "fixed", small_sqa, steps=3, alpha=1.0, every=1, sync=False)
    # Step 1's reference is the start either way; later, the synced reference is the policy
    # the step starts from, so the KL of the step's single update is float noise.
    assert all(r["kl"] < 1e-6 for r in synced)
    assert all(r["kl"] > 1e-4 for r in fixed[1:])
