"""The GRPO stage on real (small) data: no reference pass at beta = 0, ratio exactly 1 with one
update per rollout, mixed-policy groups scored with their ground truth, the completions table."""

import json

import jax
import numpy as np
import pytest
import sacrebleu
from flax import nnx
from sallm_jax.configs.sqa_grpo import get_config

from sallm_jax.models.lora import apply_lora, trainable_filter
from sallm_jax.models.qwen2_audio.model import Qwen2AudioLM
from sallm_jax.parallel.mesh import make_mesh
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.run.experiment import batch_spec, model_config
from sallm_jax.train.grpo_stage import run_grpo
from tests.batch_spec import qwen2_audio_chat

pytestmark = pytest.mark.slow


def test_grpo_stage_without_reference_and_with_ground_truth(tmp_path, small_sqa):
    rows, tok = small_sqa
    cfg = get_config("smoke")
    cfg.grpo.steps, cfg.grpo.log_every = 2, 1
    cfg.grpo.beta = 0.0
    cfg.grpo.num_off_policy = 1
    mcfg = model_config(cfg, tok)
    graphdef, params, frozen = nnx.split(Qwen2AudioLM(mcfg, rngs=nnx.Rngs(0)), nnx.Param, ...)
    # beta = 0 and a reference that cannot be used: any reference forward pass would fail.
    run_grpo(cfg.grpo, graphdef=graphdef, params=params, frozen=frozen,
             ref_params=jax.tree.map(lambda x: None, params), rows=rows["train"],
             chat=qwen2_audio_chat(tok), spec=batch_spec(cfg, mcfg, "grpo.batch_size",
                                            cfg.grpo.max_completion_length),
             workdir=tmp_path, seed=0, partitioner=Partitioner(make_mesh({"data": -1}), ()))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert r["ratio_mean"] == 1.0  # old log-probs are the current ones, exactly
        assert "kl" not in r
        assert 0.0 <= r["reward_mean"] <= 1.0
        # Diagnostics: the sampler's log-probs of its tokens equal the trainer's at the same
        # parameters up to float32 noise (the ground-truth rows are left out of the gap).
        assert 0.0 <= r["logp_diff/mean"] <= r["logp_diff/max"] < 1e-5
        assert 0.0 < r["entropy"] <= np.log(mcfg.text.vocab_size) + 1e-3
        assert (1 <= r["completion_length/min"] <= r["completion_length"]
                <= r["completion_length/max"] <= cfg.grpo.max_completion_length)
        assert r["clip_fraction/low"] + r["clip_fraction/high"] == pytest.approx(
            r["clip_fraction"])
    # The completions table: every group of each step, rewards as sacrebleu scores them, the
    # advantages the update used (scale_rewards "none": r - mean), the ground truth last.
    logged = [json.loads(line) for line in (tmp_path / "completions.jsonl").open()]
    assert [r["step"] for r in logged] == [1, 2]
    for record in logged:
        assert len(record["groups"]) == cfg.grpo.batch_size
        for group in record["groups"]:
            samples = group["samples"]
            rewards = np.array([s["reward"] for s in samples])
            np.testing.assert_allclose([s["advantage"] for s in samples],
                                       rewards - rewards.mean(), atol=1e-6)
            off_policy = [s["off_policy"] for s in samples]
            assert off_policy == [False] * (cfg.grpo.group_size - 1) + [True]
            # (cut at grpo.max_completion_length tokens, as the update sees it)
            assert group["reference"].startswith(samples[-1]["completion"])
            for s in samples:
                bleu = sacrebleu.sentence_bleu(s["completion"], [group["reference"]]).score
                assert s["rewards"]["bleu"] == pytest.approx(bleu / 100) == s["reward"]


def test_lora_grpo_trains_adapters_only_against_the_adapter_free_reference(tmp_path, small_sqa):
    rows, tok = small_sqa
    cfg = get_config("smoke")
    cfg.grpo.steps, cfg.grpo.log_every, cfg.grpo.beta = 3, 1, 0.04
    cfg.grpo.learning_rate, cfg.grpo.warmup_steps = 1e-2, 1
    model = Qwen2AudioLM(model_config(cfg, tok), rngs=nnx.Rngs(0))
    apply_lora(model, rank=4, alpha=8.0, rngs=nnx.Rngs(1))
    graphdef, adapters, frozen = nnx.split(model, trainable_filter("adapters"), ...)
    base = jax.tree.map(np.asarray, frozen)
    before = jax.tree.map(np.asarray, adapters)
    trained = run_grpo(cfg.grpo, graphdef=graphdef, params=adapters, frozen=frozen,
                       ref_params=None, rows=rows["train"], chat=qwen2_audio_chat(tok),
                       spec=batch_spec(cfg, model_config(cfg, tok), "grpo.batch_size",
                                       cfg.grpo.max_completion_length),
                       workdir=tmp_path, seed=0,
                       partitioner=Partitioner(make_mesh({"data": -1}), ()))
    # Only adapters are in the train state; the base weights are untouched.
    assert jax.tree.structure(trained) == jax.tree.structure(before)
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(trained),
                                                        jax.tree.leaves(before), strict=True))
    for a, b in zip(jax.tree.leaves(frozen), jax.tree.leaves(base), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    # Until the first update with a non-zero learning rate (warm-up starts at 0) the adapters
    # are zero (B = 0), so the KL to the adapter-free reference is exactly 0; then it is not.
    assert records[0]["kl"] == 0.0
    assert records[2]["kl"] > 0.0
