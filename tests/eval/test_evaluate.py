"""Sampled evaluation with several draws per question: each draw is scored as a whole evaluation
and the reported metrics are the mean and population std over the draws."""

import json
import logging
import re

import numpy as np
from flax import nnx
from sallm_jax.configs.sqa_grpo import get_config

from sallm_jax.eval.evaluate import evaluate
from sallm_jax.metrics.text import text_metrics
from sallm_jax.models.qwen2_audio.model import Qwen2AudioLM
from sallm_jax.parallel.mesh import make_mesh
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.rl.rollout import SamplingConfig
from sallm_jax.run.experiment import batch_spec, model_config
from tests.batch_spec import qwen2_audio_chat


def test_sampled_evaluation_reports_mean_and_spread_over_draws(tmp_path, small_sqa, caplog):
    caplog.set_level(logging.INFO)
    rows, tok = small_sqa
    cfg = get_config("smoke")
    mcfg = model_config(cfg, tok)
    graphdef, params, frozen = nnx.split(Qwen2AudioLM(mcfg, rngs=nnx.Rngs(0)), nnx.Param, ...)
    spec = batch_spec(cfg, mcfg, "eval.batch_size", 6)
    metrics = evaluate(graphdef, params, frozen, rows["test"], qwen2_audio_chat(tok), spec,
                       SamplingConfig(max_new_tokens=6, temperature=1.0, top_p=0.9),
                       partitioner=Partitioner(make_mesh({"data": -1}), ()), out_dir=tmp_path,
                       num_samples=3, name="eval smoke/test")
    # Its progress, logged without a terminal, ends with every batch done.
    assert re.fullmatch(r"\[eval smoke/test\] (\d+)/\1 \(100%\).*", caplog.messages[-1])
    records = [json.loads(line) for line in (tmp_path / "predictions.jsonl").open()]
    assert len(records) == len(rows["test"]) and all(len(r["draws"]) == 3 for r in records)
    assert any(len(set(r["draws"])) > 1 for r in records)  # the draws are samples, not copies
    references = [r["reference"] for r in records]
    per_draw = [text_metrics([r["draws"][d] for r in records], references) for d in range(3)]
    for name in ("bleu", "chrf", "rouge_l", "wer"):
        values = [m[name] for m in per_draw]
        np.testing.assert_allclose(metrics[name], np.mean(values), atol=1e-9)
        np.testing.assert_allclose(metrics[f"{name}_std"], np.std(values), atol=1e-9)
    assert metrics["num_samples"] == 3 and metrics["num_examples"] == len(rows["test"])
