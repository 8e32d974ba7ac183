"""Run SFT, rollout and GRPO steps under several meshes and print how far each lands from the
one-device result (a script: it must own the process to set the device count)."""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from sallm_jax.configs.base import base_config  # noqa: E402

from sallm_jax.audio.log_mel import num_feature_frames  # noqa: E402
from sallm_jax.models.layer_scan import set_scan_layers  # noqa: E402
from sallm_jax.models.qwen2_audio.config import (  # noqa: E402
    AudioEncoderConfig,
    Qwen2AudioConfig,
    audio_token_count,
)
from sallm_jax.models.qwen2_audio.model import Qwen2AudioLM  # noqa: E402
from sallm_jax.models.qwen2_config import TextConfig  # noqa: E402
from sallm_jax.parallel.mesh import make_mesh  # noqa: E402
from sallm_jax.parallel.partitioner import Partitioner  # noqa: E402
from sallm_jax.parallel.sharding import DEFAULT_RULES  # noqa: E402
from sallm_jax.rl.grpo_settings import GRPOSettings  # noqa: E402
from sallm_jax.rl.rollout import SamplingConfig, make_rollout_fn  # noqa: E402
from sallm_jax.train.grpo_update import make_grpo_update  # noqa: E402
from sallm_jax.train.sft import make_sft_step  # noqa: E402
from sallm_jax.train.state import make_optimizer, sharded_train_state  # noqa: E402

CONFIG = Qwen2AudioConfig(
    audio=AudioEncoderConfig(num_mel_bins=80, d_model=32, encoder_layers=1,
                             encoder_attention_heads=2, encoder_ffn_dim=64,
                             max_source_positions=100),
    text=TextConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2),
    audio_token_id=3)
B, G, C, P = 8, 2, 6, 40


def host_batch(seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1500, 4000, B)
    waves = np.zeros((B, 4000), np.float32)
    ids = np.zeros((B, P), np.int32)
    mask = np.zeros((B, P), np.int32)
    for b, n in enumerate(lengths):
        waves[b, :n] = rng.normal(0, 0.1, n)
        prompt = [7] + [3] * int(audio_token_count(num_feature_frames(n))) + [9, 10]
        ids[b, -len(prompt):], mask[b, -len(prompt):] = prompt, 1
    target = rng.integers(10, 64, (B, C)).astype(np.int32)
    return {"waveforms": waves, "num_samples": lengths.astype(np.int32), "prompt_ids": ids,
            "prompt_mask": mask, "target_ids": target,
            "target_mask": (np.arange(C) < rng.integers(2, C, B)[:, None]).astype(np.int32),
            "valid": np.ones(B, bool)}


def run(mesh_sizes, devices, scan_layers=False):
    partitioner = Partitioner(make_mesh(mesh_sizes, devices), DEFAULT_RULES)
    model = set_scan_layers(Qwen2AudioLM(CONFIG, rngs=nnx.Rngs(0)), scan_layers)
    graphdef, params, frozen = nnx.split(model, nnx.Param, ...)
    frozen_shardings = partitioner.param_shardings(frozen)
    tx = make_optimizer(learning_rate=1e-2, warmup_steps=1, total_steps=10, weight_decay=0.01,
                        max_grad_norm=1.0)
    batch = partitioner.to_global(host_batch())
    state, shardings = sharded_train_state(partitioner, params, tx)
    sft = make_sft_step(graphdef, tx, partitioner, shardings, frozen_shardings)
    state, sft_metrics = sft(state, frozen, batch)
    generate = make_rollout_fn(graphdef, shardings.params, frozen_shardings, partitioner,
                               sampling=SamplingConfig(max_new_tokens=C, temperature=0.0),
                               group_size=G, eos_ids=(1,), pad_id=0)
    out = generate(state.params, frozen, batch, jax.random.key(0))
    cfg = base_config().grpo  # the defaults of every other GRPO setting
    cfg.update({
        "group_size": G, "temperature": 1.0, "scale_rewards": "group", "epsilon": 0.2,
        "epsilon_high": 0.28, "beta": 0.04, "loss_aggregation": "dapo",
        "importance_sampling_level": "token", "num_off_policy": 0, "micro_batch_size": 0})
    update = make_grpo_update(graphdef, tx, GRPOSettings.from_section(cfg),
                              partitioner, shardings, frozen_shardings)
    rewards = np.random.default_rng(1).random((B, G)).astype(np.float32)
    group = partitioner.to_global({"ids": np.asarray(out.ids), "mask": np.asarray(out.mask),
                                   "rewards": rewards, "off_policy": np.zeros(B * G, bool)})
    ref = jax.tree.map(lambda x: x - 0.01, np.asarray(jax.device_get(out.mask), np.float32))
    ref_logp = partitioner.to_global({"r": -1.0 - ref})["r"]
    state, grpo_metrics = update(state, frozen, batch, group, None, ref_logp)
    trained = set_scan_layers(nnx.merge(graphdef, state.params, frozen), False)  # per layer
    leaves = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(nnx.state(trained, nnx.Param)))]
    return {"sft_loss": float(sft_metrics["loss"]), "grpo_loss": float(grpo_metrics["loss"]),
            "tokens": np.asarray(out.ids), "params": leaves}


def main():
    single = run({"data": 1}, jax.devices()[:1])
    report = {}
    for name in sys.argv[1:]:
        mesh, _, layers = name.partition("+")  # "2x4x1+scan": the decoder layers scanned
        sizes = dict(zip(("data", "fsdp", "tensor"), map(int, mesh.split("x")), strict=True))
        other = run(sizes, jax.devices(), scan_layers=layers == "scan")
        report[name] = {
            "sft_loss": abs(other["sft_loss"] - single["sft_loss"]),
            "grpo_loss": abs(other["grpo_loss"] - single["grpo_loss"]),
            "tokens_equal": bool((other["tokens"] == single["tokens"]).all()),
            "params": max(float(np.abs(a - b).max())
                          for a, b in zip(other["params"], single["params"], strict=True)),
        }
    print("REPORT " + json.dumps(report))


if __name__ == "__main__":
    main()
