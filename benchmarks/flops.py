"""Achieved FLOP/s of the jitted training steps as a fraction of this machine's dense float32
matmul rate, measured in the same run: the SFT step (`sallm_jax.train.sft.make_sft_step`,
8 prompts with 32-token targets) and the GRPO update (`sallm_jax.train.grpo_step.make_grpo_update`,
8 prompts x 8 completions of 32 tokens, the clipped-ratio loss with a KL term).

FLOPs per step are XLA's own count (`jit(...).lower(...).compile().cost_analysis()["flops"]`)
for forward, backward and the AdamW update; the peak is a 4096 x 4096 x 4096 `jnp.dot`. The two
are timed in turns so that background load lowers both alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from sallm_jax.configs.base import base_config

from benchmarks.checkpoints import hf_config
from benchmarks.rollout import COMPLETION, GROUP, prompt_batch
from benchmarks.timing import Row, Stat, alternate, rates
from sallm_jax.models.abstract import count_params
from sallm_jax.models.qwen2_audio.hub import speech_lm_config_from_hf
from sallm_jax.models.qwen2_audio.model import Qwen2AudioLM
from sallm_jax.parallel.mesh import make_mesh
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.rl.grpo_settings import GRPOSettings
from sallm_jax.train.grpo_update import make_grpo_update
from sallm_jax.train.sft import make_sft_step
from sallm_jax.train.state import make_optimizer, sharded_train_state

MATMUL = 4096
BATCH = 8
TARGETS = {"100m": 0.40}


def sft_batch(vocab: int) -> dict[str, np.ndarray]:
    """The rollout benchmark's prompts with a [BATCH, COMPLETION] target each."""
    batch = prompt_batch(vocab, BATCH)
    rng = np.random.default_rng(1)
    batch["target_ids"] = rng.integers(1, vocab - 1, (BATCH, COMPLETION)).astype(np.int32)
    batch["target_mask"] = np.ones((BATCH, COMPLETION), np.int32)
    batch["valid"] = np.ones((BATCH,), np.int32)
    return batch


def flops_of(compiled) -> float:
    """XLA's FLOP count of a compiled program (a dict, or a one-element list in older jax)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):
        analysis = analysis[0]
    return float(analysis["flops"])


def matmul_peak() -> tuple[Callable[[], jax.Array], float]:
    """(a blocking call of the compiled [MATMUL, MATMUL] @ [MATMUL, MATMUL] float32 product,
    its FLOPs)."""
    a = jax.random.normal(jax.random.key(0), (MATMUL, MATMUL), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (MATMUL, MATMUL), jnp.float32)
    dot = jax.jit(jnp.dot).lower(a, b).compile()
    return (lambda: dot(a, b).block_until_ready()), 2.0 * MATMUL**3


def grpo_group(vocab: int) -> dict[str, np.ndarray]:
    """[BATCH * GROUP, COMPLETION] sampled-like completions with rewards, as the update takes
    them."""
    rng = np.random.default_rng(2)
    n = BATCH * GROUP
    return {"ids": rng.integers(1, vocab - 1, (n, COMPLETION)).astype(np.int32),
            "mask": np.ones((n, COMPLETION), np.int32),
            "rewards": rng.random((BATCH, GROUP)).astype(np.float32),
            "off_policy": np.zeros((n,), bool)}


def run_size(size: str, stage: str, reps: int) -> Row:
    """FLOP/s of one `stage` ("sft" or "grpo") training step of `size`, against the matmul
    rate."""
    config = speech_lm_config_from_hf(hf_config(size).to_dict())
    # Full fine-tuning: every nnx.Param trains, the frozen rest is empty.
    graphdef, params, frozen = nnx.split(Qwen2AudioLM(config, rngs=nnx.Rngs(0)), nnx.Param, ...)
    partitioner = Partitioner(make_mesh({"data": -1}), ())
    tx = make_optimizer(learning_rate=1e-4, warmup_steps=1, total_steps=1000,
                        weight_decay=0.0, max_grad_norm=1.0)
    state, shardings = sharded_train_state(partitioner, params, tx)
    frozen = partitioner.shard_params(frozen)
    frozen_shardings = partitioner.param_shardings(frozen)
    vocab = config.text.vocab_size
    if stage == "sft":
        step_fn = make_sft_step(graphdef, tx, partitioner, shardings, frozen_shardings)
        inputs = (partitioner.to_global(sft_batch(vocab)),)
        what = f"SFT step, batch {BATCH}"
    else:
        cfg = base_config().grpo
        cfg.group_size, cfg.beta = GROUP, 0.04
        step_fn = make_grpo_update(graphdef, tx, GRPOSettings.from_section(cfg),
                                   partitioner, shardings, frozen_shardings)
        ref_logp = np.full((BATCH * GROUP, COMPLETION), -5.0, np.float32)
        arrays = partitioner.to_global({**prompt_batch(vocab, BATCH), **grpo_group(vocab),
                                        "ref_logp": ref_logp})
        batch = {k: arrays[k] for k in ("waveforms", "num_samples", "prompt_ids", "prompt_mask")}
        group = {k: arrays[k] for k in ("ids", "mask", "rewards", "off_policy")}
        inputs = (batch, group, None, arrays["ref_logp"])
        what = f"GRPO update, {BATCH} x {GROUP} x {COMPLETION}"
    start = time.perf_counter()
    compiled = step_fn.lower(state, frozen, *inputs).compile()
    compile_s = time.perf_counter() - start
    step_flops = flops_of(compiled)
    holder = [compiled(state, frozen, *inputs)[0]]  # first run: allocation, donation

    def step():
        holder[0], metrics = compiled(holder[0], frozen, *inputs)
        jax.block_until_ready(metrics)

    peak, peak_flops = matmul_peak()
    peak()
    times = alternate({"ours": step, "peer": peak}, reps)
    ours, matmul = rates(times["ours"], step_flops / 1e9), rates(times["peer"], peak_flops / 1e9)
    return Row(benchmark="flops", case=f"{size} {what}, {count_params(config) / 1e6:.1f}M "
               "params", unit="GFLOP/s",
               ours=ours, peer=matmul, peer_name=f"jnp.dot {MATMUL}^3 float32",
               target=TARGETS.get(size),
               note=f"{step_flops / 1e9:.1f} GFLOP per step (XLA cost analysis); "
                    f"compile {compile_s:.1f} s (excluded)",
               paired=Stat.of([(step_flops / o) / (peak_flops / p)
                               for o, p in zip(times["ours"], times["peer"], strict=True)]))


def run(reps: dict[str, int] | None = None) -> list[Row]:
    """Both sizes, SFT and GRPO; `reps` per size (default tiny 5, 100m 3)."""
    reps = reps or {"tiny": 5, "100m": 3}
    return [run_size(size, stage, n) for size, n in reps.items() for stage in ("sft", "grpo")]
