"""An evaluation pass written whole is read back instead of decoded again, but only for the same
parameters, rows, decoding and seed (tried here: one parameter value changed); a
pass whose files a kill left incomplete is decoded again. Slow: each pass compiles its decoder
anew (no compilation cache in tests)."""

import json

import jax
import pytest
from flax import nnx
from sallm_jax.configs.sqa_grpo import get_config

from sallm_jax.eval import evaluate as evaluation
from sallm_jax.models.qwen2_audio.model import Qwen2AudioLM
from sallm_jax.parallel.mesh import make_mesh
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.rl.rollout import SamplingConfig
from sallm_jax.run.experiment import batch_spec, model_config
from tests.batch_spec import qwen2_audio_chat

GREEDY = SamplingConfig(max_new_tokens=4, temperature=0.0)
pytestmark = pytest.mark.slow


def test_a_written_pass_is_read_back_only_for_what_it_evaluated(tmp_path, small_sqa, monkeypatch):
    rows, tok = small_sqa
    cfg = get_config("smoke")
    mcfg = model_config(cfg, tok)
    graphdef, params, frozen = nnx.split(Qwen2AudioLM(mcfg, rngs=nnx.Rngs(0)), nnx.Param, ...)
    spec = batch_spec(cfg, mcfg, "eval.batch_size", 4)
    decoded = []
    generate = evaluation.generate_answers

    def counted(*args, **kwargs):
        decoded.append(kwargs["name"])
        return generate(*args, **kwargs)

    monkeypatch.setattr(evaluation, "generate_answers", counted)

    def run(params):
        return evaluation.evaluate(graphdef, params, frozen, rows["test"], qwen2_audio_chat(tok),
                                   spec, GREEDY, out_dir=tmp_path, name="eval",
                                   partitioner=Partitioner(make_mesh({"data": -1}), ()))

    first = run(params)
    predictions = (tmp_path / "predictions.jsonl").read_text()
    assert run(params) == first and decoded == ["eval"]  # read back, not decoded
    assert json.loads((tmp_path / "metrics.json").read_text()) == first

    metrics = (tmp_path / "metrics.json").read_text()
    (tmp_path / "metrics.json").write_text(metrics[:len(metrics) // 2])  # cut short by a kill
    assert run(params) == first and len(decoded) == 2  # decoded again
    assert (tmp_path / "predictions.jsonl").read_text() == predictions

    leaves, treedef = jax.tree.flatten(params)
    leaves[0] = leaves[0].at[(0,) * leaves[0].ndim].add(1.0)  # one value of one parameter
    run(jax.tree.unflatten(treedef, leaves))
    assert len(decoded) == 3  # other parameters: decoded again
