"""The training loop every stage runs in, driven by a stage of hand-written steps (plain
gradient steps on a small model, each on the loop's next batch): the hooks' order, the records
at log_every, the best parameters on validation, and a resume that continues the data stream
and the parameters as if the run had not stopped."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from sallm_jax.data.pipeline import BatchSpec
from sallm_jax.parallel.mesh import make_mesh
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.train.health import TrainingDiverged
from sallm_jax.train.loop import StageSteps, StepResult, TrainingLoop
from sallm_jax.train.state import apply_gradients
from tests.batch_spec import QWEN2_AUDIO_TOKENS, qwen2_audio_chat

SPEC = BatchSpec(batch_size=2, audio_buckets_s=(3.0, 5.0), max_prompt_text_tokens=48,
                 max_target_tokens=16, num_audio_tokens=QWEN2_AUDIO_TOKENS)
TX = optax.sgd(0.1)


class Line(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.zeros((2,)))


def section(steps: int, eval_every: int = 0) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"steps": steps, "checkpoint_every": 2, "log_every": 2,
                                      "eval_every": eval_every})


class Steps(StageSteps):
    """Gradient steps towards the batch's first example index (both weights), so the
    parameters depend on every batch seen and in which order; `nan_at` makes a step's loss
    non-finite."""

    def __init__(self, loop: TrainingLoop, nan_at: int | None = None):
        self.loop, self.nan_at, self.calls, self.indices = loop, nan_at, [], []

    def step(self, state, step):
        index = int(next(self.loop.data_iter)["index"][0])
        self.indices.append(index)
        self.calls.append(("step", step + 1))
        target = jnp.float32(index)
        loss, grads = jax.value_and_grad(
            lambda p: ((p["w"][...] - target) ** 2).sum())(state.params)
        if step + 1 == self.nan_at:
            loss = jnp.float32(jnp.nan)
        state, finite = apply_gradients(state, grads, TX, loss)
        metrics = {"loss": loss, "finite": finite}
        return state, StepResult(metrics, {"loss": float(loss)},
                                 lambda seconds: {"loss": float(loss), "index": index})

    def check(self, step, result):
        self.calls.append(("check", step))

    def record(self, step, writer):
        self.calls.append(("record", step))


def make_loop(workdir, small_sqa, steps, validate=None, eval_every=0):
    rows, tok = small_sqa
    chat = qwen2_audio_chat(tok)
    _, params = nnx.split(Line())
    return TrainingLoop("toy", section(steps, eval_every), params=params, tx=TX,
                        rows=rows["train"], chat=chat, spec=SPEC, workdir=workdir, seed=3,
                        partitioner=Partitioner(make_mesh({"data": -1}), ()), validate=validate)


def records(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").open()]


def test_hooks_records_and_the_returned_parameters(tmp_path, small_sqa):
    loop = make_loop(tmp_path, small_sqa, steps=3)
    steps = Steps(loop)
    params = loop.run(steps)
    assert steps.calls == [(name, s) for s in (1, 2, 3) for name in ("step", "check", "record")]
    # log_every 2, and the last step.
    assert [(r["step"], r["index"]) for r in records(tmp_path)] == [
        (2, steps.indices[1]), (3, steps.indices[2])]
    # Three SGD steps on (w - index)^2 from w = 0, computed here by hand.
    w = 0.0
    for index in steps.indices:
        w -= 0.1 * 2 * (w - index)
    np.testing.assert_allclose(np.asarray(params["w"][...]), [w, w], rtol=1e-6)


def test_resume_continues_the_data_and_the_parameters(tmp_path, small_sqa):
    alone = make_loop(tmp_path / "alone", small_sqa, steps=6)
    alone_steps = Steps(alone)
    expected = alone.run(alone_steps)

    first = make_loop(tmp_path / "cut", small_sqa, steps=6)
    first_steps = Steps(first)
    first.cfg.steps = 4  # stop after step 4, as a kill after its checkpoint would
    first.run(first_steps)
    again = make_loop(tmp_path / "cut", small_sqa, steps=6)
    assert again.resumed and again.step == 4
    again_steps = Steps(again)
    resumed = again.run(again_steps)
    assert first_steps.indices + again_steps.indices == alone_steps.indices
    np.testing.assert_array_equal(np.asarray(resumed["w"][...]),
                                  np.asarray(expected["w"][...]))
    assert [r["step"] for r in records(tmp_path / "cut")] == [2, 4, 6]


def test_best_on_validation_is_returned(tmp_path, small_sqa):
    # Higher is better: minus the distance of w from 1, so the best step is the one nearest 1.
    seen = {}

    def validate(params):
        score = -abs(float(params["w"][0]) - 1.0)
        seen[len(seen)] = score
        return score

    loop = make_loop(tmp_path, small_sqa, steps=4, validate=validate, eval_every=1)
    best = loop.run(Steps(loop))
    assert len(seen) == 5  # the start and every step
    assert -abs(float(best["w"][0]) - 1.0) == pytest.approx(max(seen.values()))


def test_a_nonfinite_step_stops_the_stage(tmp_path, small_sqa):
    loop = make_loop(tmp_path, small_sqa, steps=4)
    steps = Steps(loop, nan_at=2)
    with pytest.raises(TrainingDiverged, match="step 2"):
        loop.run(steps)
    assert ("check", 2) not in steps.calls  # the stage's own watches come after the health check
