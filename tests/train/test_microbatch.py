"""Gradient accumulation over micro-batches gives the full-batch GRPO update."""

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from sallm_jax.configs.base import base_config

from sallm_jax.audio.log_mel import num_feature_frames
from sallm_jax.models.qwen2_audio.config import (
    AudioEncoderConfig,
    Qwen2AudioConfig,
    audio_token_count,
)
from sallm_jax.models.qwen2_audio.model import Qwen2AudioLM
from sallm_jax.models.qwen2_config import TextConfig
from sallm_jax.parallel.mesh import make_mesh
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.rl.grpo_settings import GRPOSettings
from sallm_jax.train.grpo_update import make_grpo_update, make_logprob_fn
from sallm_jax.train.microbatch import join_prompts, split_prompts
from sallm_jax.train.state import sharded_train_state

B, G, C, P = 4, 2, 5, 30
CONFIG = Qwen2AudioConfig(
    audio=AudioEncoderConfig(num_mel_bins=80, d_model=32, encoder_layers=1,
                             encoder_attention_heads=2, encoder_ffn_dim=64,
                             max_source_positions=100),
    text=TextConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                    num_attention_heads=4, num_key_value_heads=2),
    audio_token_id=3)


def inputs():
    rng = np.random.default_rng(0)
    waves = np.zeros((B, 3000), np.float32)
    ids = np.zeros((B, P), np.int32)
    mask = np.zeros((B, P), np.int32)
    lengths = rng.integers(1200, 3000, B)
    for b, n in enumerate(lengths):
        waves[b, :n] = rng.normal(0, 0.1, n)
        prompt = [7] + [3] * int(audio_token_count(num_feature_frames(n))) + [9]
        ids[b, -len(prompt):], mask[b, -len(prompt):] = prompt, 1
    batch = {"waveforms": waves, "num_samples": lengths.astype(np.int32), "prompt_ids": ids,
             "prompt_mask": mask}
    group = {"ids": rng.integers(10, 64, (B * G, C)).astype(np.int32),
             "mask": (np.arange(C) < rng.integers(1, C + 1, B * G)[:, None]).astype(np.int32),
             "rewards": rng.random((B, G)).astype(np.float32),
             "off_policy": np.zeros(B * G, bool)}
    ref = rng.normal(-4, 0.5, (B * G, C)).astype(np.float32)
    return batch, group, ref


def one_update(cfg, batch, group) -> dict:
    """The metrics of one GRPO update (settings `cfg`, no reference log-probs) of the tiny
    model with seed 0, under plain SGD."""
    partitioner = Partitioner(make_mesh({"data": -1}), ())
    graphdef, params, frozen = nnx.split(Qwen2AudioLM(CONFIG, rngs=nnx.Rngs(0)), nnx.Param, ...)
    tx = optax.sgd(1e-2)
    state, shardings = sharded_train_state(partitioner, params, tx, copy=True)
    update = make_grpo_update(graphdef, tx, GRPOSettings.from_section(cfg),
                              partitioner, shardings,
                              partitioner.param_shardings(frozen))
    return update(state, frozen, partitioner.to_global(batch), partitioner.to_global(group),
                  None, None)[1]


def test_split_prompts_keeps_groups_together_and_strides():
    x = np.arange(8 * 2).reshape(8 * 2, 1)  # 8 prompts x 2 rows
    chunks = np.asarray(split_prompts(x, 4, rows_per_prompt=2))[..., 0]
    np.testing.assert_array_equal(chunks[0], [0, 1, 8, 9])  # prompts 0 and 4
    np.testing.assert_array_equal(chunks[3], [6, 7, 14, 15])  # prompts 3 and 7
    np.testing.assert_array_equal(join_prompts(split_prompts(x, 4, 2), 2), x)


def test_micro_batched_logprobs_match_whole_batch():
    partitioner = Partitioner(make_mesh({"data": -1}), ())
    graphdef, params, frozen = nnx.split(Qwen2AudioLM(CONFIG, rngs=nnx.Rngs(0)), nnx.Param, ...)
    batch, group, _ = inputs()
    shardings = (partitioner.param_shardings(params), partitioner.param_shardings(frozen))
    out = [make_logprob_fn(graphdef, *shardings, partitioner, group_size=G, temperature=1.0,
                           micro_batch_size=micro)(
               params, frozen, partitioner.to_global(batch),
               *partitioner.to_global({"i": group["ids"], "m": group["mask"]}).values())
           for micro in (0, 1)]
    np.testing.assert_allclose(np.asarray(out[1]), np.asarray(out[0]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("aggregation", ["dapo", "grpo", "dr_grpo"])
def test_micro_batches_match_full_batch(aggregation):
    partitioner = Partitioner(make_mesh({"data": -1}), ())
    graphdef, params, frozen = nnx.split(Qwen2AudioLM(CONFIG, rngs=nnx.Rngs(0)), nnx.Param, ...)
    # Plain SGD: the parameters move by the (accumulated) gradients themselves. (Adam would
    # divide near-zero gradients by their own scale and blow float32 summation-order noise up
    # to a fraction of the learning rate.)
    tx = optax.sgd(1e-2)
    batch, group, ref = inputs()
    results = []
    for micro in (0, 1):
        cfg = base_config().grpo  # the defaults of every other GRPO setting
        cfg.update({
            "group_size": G, "temperature": 1.0, "scale_rewards": "group", "epsilon": 0.2,
            "epsilon_high": 0.2, "beta": 0.04, "loss_aggregation": aggregation,
            "importance_sampling_level": "token", "num_off_policy": 0,
            "micro_batch_size": micro})
        state, shardings = sharded_train_state(partitioner, params, tx, copy=True)
        update = make_grpo_update(graphdef, tx, GRPOSettings.from_section(cfg),
                                  partitioner, shardings,
                                  partitioner.param_shardings(frozen))
        for _ in range(2):  # the second step starts from updated parameters
            state, metrics = update(state, frozen, partitioner.to_global(batch),
                                    partitioner.to_global(group), None,
                                    partitioner.to_global({"r": ref})["r"])
        results.append((float(metrics["loss"]), float(metrics["grad_norm"]),
                        jax.device_get(state.params)))
    (full_loss, full_norm, full), (micro_loss, micro_norm, micro_params) = results
    assert micro_loss == pytest.approx(full_loss, rel=1e-5, abs=1e-7)
    assert micro_norm == pytest.approx(full_norm, rel=1e-5)
    for a, b in zip(jax.tree.leaves(micro_params), jax.tree.leaves(full), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def numpy_gdpo_group(per_fn, weights):
    """GDPO with group scaling over complete per-function rewards [B, G, F] (NumPy)."""
    centred = per_fn - per_fn.mean(1, keepdims=True)
    summed = (centred / (per_fn.std(1, ddof=1, keepdims=True) + 1e-4) * weights).sum(-1)
    return (summed - summed.mean()) / (summed.std(ddof=1) + 1e-4)


def test_update_diagnostics_and_per_reward_advantages_with_and_without_micro_batches():
    from sallm_jax.rl.policy import completion_logprobs_and_entropy

    graphdef, params, frozen = nnx.split(Qwen2AudioLM(CONFIG, rngs=nnx.Rngs(0)), nnx.Param, ...)
    batch, group, _ = inputs()
    rng = np.random.default_rng(7)
    weights = np.array([1.0, 0.5], np.float32)
    per_fn = rng.random((B, G, 2)).astype(np.float32)
    group = {**group, "per_fn": per_fn,
             "rollout_logp": rng.normal(-4, 0.5, (B * G, C)).astype(np.float32)}
    logp, entropy = (np.asarray(x) for x in completion_logprobs_and_entropy(
        nnx.merge(graphdef, params, frozen), batch, group["ids"], group["mask"], group_size=G))
    m = group["mask"].astype(np.float32)
    # On-policy, ratio 1, dapo: the loss is -sum A over the tokens / their number.
    advantages = numpy_gdpo_group(per_fn.astype(np.float64), weights).reshape(-1)
    expected_loss = -(advantages[:, None] * m).sum() / m.sum()
    gap = np.abs(group["rollout_logp"] - logp)[m > 0]
    for micro in (0, 1):
        cfg = base_config().grpo
        cfg.update({"group_size": G, "beta": 0.0, "scale_rewards": "group",
                    "multi_reward_normalization": "per_reward", "reward_weights": (1.0, 0.5),
                    "reward_fns": ("bleu", "chrf"), "micro_batch_size": micro})
        metrics = one_update(cfg, batch, group)
        assert float(metrics["loss"]) == pytest.approx(expected_loss, rel=1e-4, abs=1e-6)
        assert float(metrics["entropy"]) == pytest.approx((entropy * m).sum() / m.sum(),
                                                          rel=1e-5)
        assert float(metrics["logp_diff/mean"]) == pytest.approx(gap.mean(), rel=1e-5)
        assert float(metrics["logp_diff/max"]) == pytest.approx(gap.max(), rel=1e-6)
