"""The accelerator benchmark's measurements: a GRPO step at the papers' shapes, and TRL side
by side. Each phase of the run is one process of this module:

    python -m benchmarks.device --phase {smoke,granite,trl} [--smoke] [--rows FILE]
    python -m benchmarks.device [options]      # the whole run: benchmarks/device_run.py
    bash benchmarks/device.sh [options]        # the same, on a fresh device machine

`benchmarks/device_run.py` starts the phases in turn, each under its own wall-clock budget,
reads the rows each appends to --rows (JSON lines) and writes the Markdown table
(benchmarks/DEVICE.md). Every result is emitted as a row as soon as it is known, and every
stage announced by a time-stamped progress line, so a phase stopped over its budget leaves
what it measured and says where it was.

On random weights at real widths (the `granite_speech_2b` preset: 3.0 B parameters; bfloat16
storage and compute, LoRA r=64 on q/v as float32 master weights, remat on, the decoder's
layers stored stacked under the layer scan) the granite phase measures, for the papers'
shapes (16 prompts x G=8, 256 text tokens + 10 s of audio per prompt, completions of 200
tokens, temperature 1, beta 0.04 against the adapters-off reference), in this order:

- the build: the model abstract, drawn on the device, its layers stacked, the train state;
- each program's compilation, lowering and XLA compilation timed apart: the rollout, the
  reference log-probs, the update (later calls reuse the executables);
- the rollout, as completion tokens/s against the HBM roofline of decoding (every decode step
  reads the decoder's weights and the KV cache once);
- the update, as model FLOP/s against the card's dense bfloat16 peak (MFU; model FLOPs count
  no rematerialisation);
- the whole GRPO step (`GRPOStep`: rollout, host scoring, reference log-probs, update);
- peak device memory against `plan_memory`'s prediction;
- fused (cuDNN) against einsum attention in the update's forward pass: the largest difference
  of the completions' log-probs, and the time of each.

The smoke phase runs the same at toy widths (`smoke_config`, `SMOKE`), without the attention
rows; the trl phase runs the `grpo_step` comparison with TRL's `GRPOTrainer` at the 100M size,
both sides in float32 (`benchmarks/grpo_step.py`). `--smoke` shrinks every phase so that CPU
runs it (tests/test_benchmarks_device.py); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import faulthandler
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from sallm_jax.configs.base import base_config

from benchmarks.timing import Row, Stat
from sallm_jax.commands.step_memory import PlanInputs, plan_memory
from sallm_jax.data.chat_format import ChatFormat
from sallm_jax.data.manifest import ManifestRow
from sallm_jax.models.attention import set_fused_attention
from sallm_jax.models.families import num_audio_tokens
from sallm_jax.models.granite_speech.config import (
    GraniteEncoderConfig,
    GraniteProjectorConfig,
    GraniteSpeechConfig,
)
from sallm_jax.models.granite_speech.family import GRANITE_SPEECH
from sallm_jax.models.granite_speech.model import GraniteSpeechLM
from sallm_jax.models.layer_scan import set_scan_layers
from sallm_jax.models.lora import LoRAParam, apply_lora
from sallm_jax.models.presets import get_preset
from sallm_jax.models.remat import set_remat
from sallm_jax.parallel.mesh import make_mesh
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.rl.grpo_settings import GRPOSettings
from sallm_jax.rl.policy import completion_logprobs, merge_policy
from sallm_jax.train.grpo_step import GRPOStep
from sallm_jax.train.state import make_optimizer, sharded_train_state

GIB = 1024**3
SAMPLE_RATE = 16000


@dataclasses.dataclass(frozen=True)
class Shapes:
    batch: int  # prompts per step
    group: int  # completions per prompt
    text_tokens: int  # prompt text tokens besides the audio placeholders
    audio_s: float
    completion: int
    reps: int  # timed repetitions of each measurement after the compiling call


PAPER = Shapes(batch=16, group=8, text_tokens=256, audio_s=10.0, completion=200, reps=3)
SMOKE = Shapes(batch=2, group=2, text_tokens=8, audio_s=1.0, completion=4, reps=1)

# Ceilings of the card, by the name jax reports: (dense bfloat16 FLOP/s, HBM bytes/s), from
# the vendor's datasheet.
CEILINGS = {"NVIDIA H200": (989e12, 4.8e12), "NVIDIA H100 80GB HBM3": (989e12, 3.35e12)}


def smoke_config() -> GraniteSpeechConfig:
    """granite_speech_2b's structure at toy widths (2 layers everywhere, vocab 512)."""
    paper = get_preset("granite_speech_2b")
    encoder = GraniteEncoderConfig(num_layers=1, hidden_dim=32, num_heads=2, dim_head=16,
                                   output_dim=16, context_size=20, max_pos_emb=64)
    projector = GraniteProjectorConfig(hidden_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=64,
                                       cross_attention_frequency=1, encoder_hidden_size=32)
    text = dataclasses.replace(paper.text, vocab_size=512, hidden_size=64, intermediate_size=128,
                               num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=2)
    return dataclasses.replace(paper, encoder=encoder, projector=projector, text=text,
                               audio_token_id=511)


class IdTokenizer:
    """Decodes ids as their decimal numbers: what `GRPOStep` needs of a tokenizer (the pad id,
    `decode`) for random weights, whose completions are not text anyway."""

    eos_token_id = pad_token_id = 0

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return " ".join(str(int(i)) for i in ids if not (skip_special_tokens and i == 0))


def id_chat(config: GraniteSpeechConfig) -> ChatFormat:
    """The chat format `GRPOStep` reads for the hand-built batches (`host_batch`): its stop and
    pad ids, 0, and `IdTokenizer` to decode."""
    return ChatFormat(tokenizer=IdTokenizer(), audio_token=GRANITE_SPEECH.audio_token,
                      audio_token_id=config.audio_token_id,
                      user_content=GRANITE_SPEECH.user_content, turn_end_id=0, stop_ids=(0,))


def random_model(config: GraniteSpeechConfig, lora_rank: int) -> GraniteSpeechLM:
    """The model built abstractly, then drawn on the device by one compiled program: weights
    N(0, 0.02) in bfloat16, LoRA factors float32 (B zero, as `apply_lora` leaves it),
    BatchNorm statistics mean 0 and variance 1. The program draws one float32 vector for all
    the weights and slices it: one random-number operation to compile instead of one per
    weight (500 of them at granite_speech_2b's 40 layers; on this CPU the toy model's
    per-weight program took 17 s to compile and draw, the sliced one 6 s). LoRA is applied
    here, before any `set_scan_layers` (`apply_lora` refuses a stacked model)."""

    def build():
        model = GraniteSpeechLM(config, rngs=nnx.Rngs(0), dtype=jnp.bfloat16,
                                param_dtype=jnp.bfloat16)
        apply_lora(model, rank=lora_rank, alpha=lora_rank, rngs=nnx.Rngs(1))
        return model

    model = nnx.eval_shape(build)
    state = nnx.state(model)
    named = [(jax.tree_util.keystr(path), leaf) for path, leaf in
             jax.tree.leaves_with_path(state)]
    sizes = [math.prod(leaf.shape) for _, leaf in named]

    @jax.jit
    def draw(key):
        flat = 0.02 * jax.random.normal(key, (sum(sizes),), jnp.float32)
        values, offset = [], 0
        for (name, leaf), size in zip(named, sizes, strict=True):
            if "lora_b" in name or "batch_norm']['mean" in name:
                values.append(jnp.zeros(leaf.shape, leaf.dtype))
            elif "batch_norm']['var" in name:
                values.append(jnp.ones(leaf.shape, leaf.dtype))
            else:
                values.append(flat[offset:offset + size].reshape(leaf.shape).astype(leaf.dtype))
            offset += size
        return values

    nnx.update(model, jax.tree.unflatten(jax.tree.structure(state), draw(jax.random.key(0))))
    return model


def host_batch(config: GraniteSpeechConfig, shapes: Shapes) -> tuple[dict, list[ManifestRow]]:
    """Prompts as the data pipeline lays them out: noise clips of `audio_s` seconds, each
    prompt its audio placeholders then random text ids; answers of 20 random ids."""
    rng = np.random.default_rng(0)
    samples = int(shapes.audio_s * SAMPLE_RATE)
    audio = num_audio_tokens(config, samples)
    vocab = config.text.vocab_size
    text = rng.integers(1, vocab, (shapes.batch, shapes.text_tokens))
    text[text == config.audio_token_id] = 1
    ids = np.concatenate([np.full((shapes.batch, audio), config.audio_token_id), text], 1)
    batch = {"waveforms": (0.1 * rng.standard_normal((shapes.batch, samples))).astype(np.float32),
             "num_samples": np.full((shapes.batch,), samples, np.int32),
             "prompt_ids": ids.astype(np.int32), "prompt_mask": np.ones_like(ids, np.int32),
             "index": np.arange(shapes.batch, dtype=np.int32),
             "valid": np.ones((shapes.batch,), bool)}
    rows = [ManifestRow(id=f"p{i}", audio="", task="sqa", question="",
                        answer=" ".join(map(str, rng.integers(1, vocab, 20))))
            for i in range(shapes.batch)]
    return batch, rows


def rl_config(shapes: Shapes):
    cfg = base_config().grpo
    cfg.batch_size, cfg.group_size = shapes.batch, shapes.group
    cfg.max_completion_length = shapes.completion
    cfg.temperature, cfg.top_p, cfg.top_k = 1.0, 1.0, 0
    cfg.beta, cfg.num_iterations, cfg.micro_batch_size = 0.04, 1, 0
    cfg.reward_fns, cfg.reward_weights = ("bleu",), (1.0,)
    return cfg


def decoder_matmul_params(config: GraniteSpeechConfig) -> tuple[int, int]:
    """(weights of one decoder layer's matmuls, of the output head)."""
    t = config.text
    head_dim = t.hidden_size // t.num_attention_heads
    attention = 2 * t.hidden_size * t.num_attention_heads * head_dim + \
        2 * t.hidden_size * t.num_key_value_heads * head_dim
    return attention + 3 * t.hidden_size * t.intermediate_size, t.hidden_size * t.vocab_size


def update_model_flops(config: GraniteSpeechConfig, shapes: Shapes, prompt_len: int) -> float:
    """Model FLOPs of one update with a frozen base (LoRA): forward and the backward pass to
    the activations (2 + 2 FLOPs per weight per token; no weight gradients but the adapters',
    which are negligible), for the prompts once (the shared prefix) and every completion, plus
    attention (QK and PV: 4 FLOPs per key per attended position and head dimension, forward;
    twice that backward). The audio encoder (forward only, once per clip) is left out."""
    t = config.text
    layer, head = decoder_matmul_params(config)
    rows = shapes.batch * shapes.group
    prompt_tokens, completion_tokens = shapes.batch * prompt_len, rows * shapes.completion
    matmul = 4 * (t.num_hidden_layers * layer * (prompt_tokens + completion_tokens)
                  + head * completion_tokens)
    width = t.num_attention_heads * (t.hidden_size // t.num_attention_heads)
    prompt_keys = shapes.batch * prompt_len * prompt_len / 2
    completion_keys = rows * shapes.completion * (prompt_len + shapes.completion / 2)
    attention = 3 * 4 * width * t.num_hidden_layers * (prompt_keys + completion_keys)
    return float(matmul + attention)


def decode_read_bytes(config: GraniteSpeechConfig, shapes: Shapes, prompt_len: int,
                      completion_slots: float) -> tuple[float, float]:
    """HBM bytes one decode step reads in bfloat16, as (once per step, with the rows): the
    decoder's matmul weights and each prompt's KV cache, and every row's own
    `completion_slots` cache slots."""
    t = config.text
    layer, head = decoder_matmul_params(config)
    kv_per_token = t.num_hidden_layers * t.num_key_value_heads * t.head_dim * 2 * 2
    fixed = 2.0 * (t.num_hidden_layers * layer + head) + kv_per_token * shapes.batch * prompt_len
    return fixed, kv_per_token * shapes.batch * shapes.group * completion_slots


def decode_bytes_per_step(config: GraniteSpeechConfig, shapes: Shapes, prompt_len: int) -> float:
    """HBM bytes one decode step must read on average: the decoder's bfloat16 matmul weights
    and the KV cache (each prompt's once, each row's own half-filled on average). This is the
    ideal decoder's floor; the rollout reads each row's whole preallocated completion cache at
    every step, masked, so it reads more than this (benchmarks/ended_rows.py counts those)."""
    return sum(decode_read_bytes(config, shapes, prompt_len, shapes.completion / 2))


def row(case: str, unit: str, ours: list[float], reference: float, reference_name: str,
        note: str) -> Row:
    stat = Stat.of(ours)
    return Row(benchmark="device", case=case, unit=unit, ours=stat,
               peer=Stat(reference, reference, reference), peer_name=reference_name, note=note)


STARTED = time.perf_counter()


def progress(message: str) -> None:
    """A time-stamped line (seconds since this process started), so that a run cut short shows
    where its time went; `benchmarks.device_run` reads the last one as what the phase was
    doing."""
    print(f"[device +{time.perf_counter() - STARTED:.0f} s] {message}", flush=True)


def seconds(fn: Callable[[], object]) -> float:
    """Wall seconds of `fn()`, blocking until its arrays are computed."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def repeated(name: str, fn: Callable[[], object], reps: int,
             make_row: Callable[[list[float], float | None], Row], emit: Callable[[Row], None],
             warmup: bool = True) -> None:
    """`reps` timed calls of `fn`, after one untimed call with `warmup` (its first execution:
    the program is already compiled, but the first run may set up buffers); after each timed
    call, `make_row(times so far, the warm-up's seconds)` is emitted again (the same case: the
    later row replaces the earlier), so a phase stopped between calls keeps those that
    finished."""
    first = None
    if warmup:
        progress(f"{name}: first execution")
        first = seconds(fn)
    times: list[float] = []
    for rep in range(reps):
        progress(f"{name}: timed call {rep + 1} of {reps}")
        times.append(seconds(fn))
        emit(make_row(times, first))


def compiled(name: str, jitted, args: tuple, emit: Callable[[Row], None]) -> None:
    """Lower and compile `jitted` (a `jax.jit` function) on `args`, each timed, and emit the
    row at once. Later calls of `jitted` with arguments like `args` reuse the executable from
    jit's cache (no second compilation: on jax 0.10 a `.lower().compile()` fills it)."""
    progress(f"compile {name}: tracing and lowering to StableHLO")
    start = time.perf_counter()
    lowered = jitted.lower(*args)
    lower_s = time.perf_counter() - start
    progress(f"compile {name}: lowered in {lower_s:.1f} s; XLA compiling")
    start = time.perf_counter()
    lowered.compile()
    compile_s = time.perf_counter() - start
    emit(row(f"compile: {name}", "s", [compile_s], lower_s, "lowering (s)",
             f"XLA compilation {compile_s:.1f} s after {lower_s:.1f} s of tracing and lowering"))


def paper_step(config: GraniteSpeechConfig, shapes: Shapes, emit: Callable[[Row], None],
               lora_rank: int = 64, attention: bool = True) -> None:
    """The GRPO step and its parts at `shapes`; rows go to `emit` as soon as each is known:
    the model's build, each program's compilation (rollout, reference log-probs, update;
    `.lower().compile()`, timed apart), the rollout's and the update's speed, the whole step
    (which then reuses the compiled programs), peak memory, and with `attention` fused
    against einsum attention."""
    device = jax.devices()[0]
    peak_flops, bandwidth = CEILINGS.get(device.device_kind, (float("nan"), float("nan")))
    progress("build: the model abstract (nnx.eval_shape), then drawn on the device")
    start = time.perf_counter()
    model = random_model(config, lora_rank)
    drawn_s = time.perf_counter() - start
    progress(f"build: drawn in {drawn_s:.1f} s; stacking the layers (set_scan_layers)")
    set_remat(model, True)  # the default einsum attention; `attention_rows` tries fused
    set_scan_layers(model, True)  # 40 layers compiled once (benchmarks/compile_time.py)
    graphdef, params, frozen = nnx.split(model, LoRAParam, ...)
    del model
    partitioner = Partitioner(make_mesh({"data": -1}), ())
    cfg = rl_config(shapes)
    tx = make_optimizer(learning_rate=1e-5, warmup_steps=0, total_steps=100, weight_decay=0.0,
                        max_grad_norm=1.0)
    state, shardings = sharded_train_state(partitioner, params, tx, copy=True)
    batch, rows = host_batch(config, shapes)
    prompt_len = batch["prompt_ids"].shape[1]
    step = GRPOStep(cfg, settings=GRPOSettings.from_section(cfg), graphdef=graphdef, tx=tx,
                    state_shardings=shardings, frozen=frozen, ref_params=None, rows=rows,
                    chat=id_chat(config), partitioner=partitioner)
    del params, frozen
    holder = {"state": state}
    del state
    device_in = partitioner.device_batch(batch)
    count = sum(x.size for x in jax.tree.leaves((holder["state"].params, step.frozen)))
    nbytes = sum(x.nbytes for x in jax.tree.leaves((holder["state"].params, step.frozen)))
    build_s = time.perf_counter() - start
    emit(row("build: model, train state, GRPOStep", "s", [build_s], float("nan"), "-",
             f"{count / 1e6:.4g} M parameters, {nbytes / GIB:.3g} GiB; abstract build and "
             f"drawing {drawn_s:.1f} s, then layer stacking, train state and the step's "
             "programs (not yet compiled)"))

    key = jax.random.key(2)
    compiled("rollout", step.sample, (holder["state"].params, step.frozen, device_in, key), emit)
    per_step = decode_bytes_per_step(config, shapes, prompt_len)
    roofline = shapes.batch * shapes.group * bandwidth / per_step
    tokens = [0.0]

    def sample():
        out = step.sample(holder["state"].params, step.frozen, device_in, key)
        tokens[0] = float(np.asarray(out.mask).sum())
        return out

    repeated("rollout", sample, shapes.reps, lambda times, first: row(
        "rollout, completion tokens/s", "tokens/s", [tokens[0] / t for t in times], roofline,
        "HBM roofline of decoding",
        f"{tokens[0]:.0f} tokens per rollout (prefill and audio encoder included); roofline: "
        f"{shapes.batch * shapes.group} rows per step, {per_step / 1e9:.2f} GB read per step at "
        f"{bandwidth / 1e12:.1f} TB/s; {len(times)} of {shapes.reps} timed calls; first "
        f"execution {first:.2f} s"), emit)

    progress("rollout and host scoring for the update's inputs (GRPOStep.generate)")
    (generation,) = step.generate(holder["state"], [batch], [jax.random.key(3)])
    ref_args = (holder["state"].params, step.frozen, generation.batch, generation.group["ids"],
                generation.group["mask"])
    compiled("reference log-probs", step.ref_logprobs, ref_args, emit)
    progress("reference log-probs: first execution")
    ref_logp = jax.block_until_ready(step.ref_logprobs(*ref_args))
    compiled("update", step.update, (holder["state"], step.frozen, generation.batch,
                                     generation.group, generation.old_logp, ref_logp), emit)

    def update():
        holder["state"], metrics = step.update(holder["state"], step.frozen, generation.batch,
                                               generation.group, generation.old_logp, ref_logp)
        return holder["state"], metrics

    flops = update_model_flops(config, shapes, prompt_len)
    repeated("update", update, shapes.reps, lambda times, first: row(
        "update, model FLOP/s (MFU)", "TFLOP/s", [flops / t / 1e12 for t in times],
        peak_flops / 1e12, "dense bf16 peak (datasheet)",
        f"{flops / 1e12:.1f} model TFLOPs per update (forward + backward to activations, remat "
        f"not counted); {np.median(times):.2f} s per update; {len(times)} of {shapes.reps} "
        f"timed calls; first execution {first:.2f} s"), emit)

    def full_step():
        holder["state"], metrics, _ = step(holder["state"], batch, jax.random.key(1))
        return holder["state"], metrics

    repeated("whole GRPO step", full_step, shapes.reps, lambda times, first: row(
        f"GRPO step, {shapes.batch} x G={shapes.group}, prompt {prompt_len} "
        f"({shapes.text_tokens} text + {shapes.audio_s:g} s audio), completion "
        f"{shapes.completion}", "s/step", times, float("nan"), "-",
        "rollout + host scoring + reference log-probs + update, the programs compiled above "
        f"(no warm-up step); {len(times)} of {shapes.reps} timed steps"), emit, warmup=False)

    stats = device.memory_stats() or {}
    plan = plan_memory(config, {"data": 1, "fsdp": 1, "tensor": 1},
                       PlanInputs(batch_size=shapes.batch, group_size=shapes.group,
                                  prompt_len=prompt_len, completion_len=shapes.completion,
                                  dtype="bfloat16", lora_rank=lora_rank, remat="full",
                                  beta=cfg.beta))
    if "peak_bytes_in_use" in stats:
        emit(row("peak device memory", "GiB", [stats["peak_bytes_in_use"] / GIB],
                 plan.total / GIB, "plan_memory prediction",
                 "memory_stats()['peak_bytes_in_use'] over the whole run; prediction "
                 "= `python -m sallm_jax.commands.plan_memory --preset granite_speech_2b "
                 "--remat full "
                 f"--lora_rank {lora_rank} --prompt_len {prompt_len} ...`"))

    if attention:
        progress("fused against einsum attention: compiling both forward passes")
        for r in attention_rows(graphdef, holder["state"].params, step.frozen,
                                generation.batch, generation.group, cfg, shapes.reps):
            emit(r)


def attention_rows(graphdef, params, frozen, batch, group, cfg, reps: int) -> list[Row]:
    """Completion log-probs (the update's forward pass) with fused against einsum attention,
    same weights: their largest difference, and the time of each."""

    def compiled(fused: bool):
        def fn(params, frozen, batch, ids, mask):
            model = merge_policy(graphdef, params, frozen)
            set_fused_attention(model, fused)
            return completion_logprobs(model, batch, ids, mask, group_size=cfg.group_size,
                                       temperature=cfg.temperature)

        args = (params, frozen, batch, group["ids"], group["mask"])
        program = jax.jit(fn).lower(*args).compile()
        # XLA names cuDNN's attention custom calls __cudnn$fmha...; convolutions (the audio
        # encoder's) are cuDNN calls of other names.
        return (lambda: program(*args)), "__cudnn$fmha" in program.as_text()

    (fused, uses_cudnn), (einsum, _) = compiled(True), compiled(False)
    mask = np.asarray(group["mask"], bool)
    diff = np.abs(np.asarray(fused())[mask] - np.asarray(einsum())[mask])
    times = {name: [seconds(fn) for _ in range(reps)] for name, fn in (("fused", fused),
                                                                       ("einsum", einsum))}
    kernel = ("cuDNN fused attention" if uses_cudnn else
              "XLA path (no cuDNN attention call in the program)")
    return [row("fused vs einsum attention, completion log-probs", "max abs diff",
                [float(diff.max())], float(np.abs(np.asarray(einsum())[mask]).mean()),
                "mean |log-prob|",
                f"median abs diff {np.median(diff):.2e} over {mask.sum()} tokens; {kernel}"),
            row("log-prob forward pass, fused attention", "s", times["fused"],
                float(np.median(times["einsum"])), "einsum attention (s)",
                f"{kernel}; measured / reference < 1 means fused is faster")]


def log_long_compiles(threshold_s: float = 1.0) -> None:
    """A progress line for every XLA compilation longer than `threshold_s`: one the phase did
    not announce (a program compiled a second time) shows in the log."""

    def listener(event: str, duration_s: float, **_) -> None:
        if event == "/jax/core/compile/backend_compile_duration" and duration_s > threshold_s:
            progress(f"(an XLA compilation finished: {duration_s:.1f} s)")

    jax.monitoring.register_event_duration_secs_listener(listener)


def describe_device() -> str:
    """The accelerator and the versions this process runs with, for the table's header."""
    import flax
    import transformers

    device = jax.devices()[0]
    return (f"{device.device_kind} x {jax.device_count()} ({jax.default_backend()}); jax "
            f"{jax.__version__}, flax {flax.__version__}, transformers "
            f"{transformers.__version__}")


def announce_trl_stages(module, size: str) -> None:
    """A progress line as each stage of `module.run` (benchmarks/grpo_step.py) begins, so that
    a trl phase stopped over its budget says where it was: its module-level names are wrapped
    (this process runs the comparison once)."""

    def announce(owner, name: str, message: Callable[[int], str]) -> None:
        original, calls = getattr(owner, name), [0]

        def announced(*args, **kwargs):
            calls[0] += 1
            progress(message(calls[0]))
            return original(*args, **kwargs)

        setattr(owner, name, announced)

    announce(module.Ours, "__call__", lambda n: f"trl: sallm_jax GRPO step {n}"
             + (" (compiling)" if n == 1 else ""))
    announce(module.Peer, "__call__", lambda n: f"trl: TRL GRPOTrainer step {n}")
    for name, what in (("train_tokenizer", "training the tokenizer"),
                       ("save_text_model", f"writing the random {size} checkpoint"),
                       ("Ours", "building sallm_jax's side"),
                       ("greedy_gate", "greedy tokens against transformers' generate"),
                       ("Peer", "building TRL's GRPOTrainer")):
        announce(module, name, lambda n, what=what: f"trl: {what}")


def run_phase(phase: str, smoke: bool, emit: Callable[[Row], None]) -> None:
    """One phase of the run (`benchmarks.device_run.PHASES`): "smoke" at toy sizes, "granite"
    at the papers' shapes (toy sizes too under `smoke`), "trl" the comparison at 100M (tiny
    under `smoke`)."""
    if phase == "trl":
        from benchmarks import grpo_step

        size = "tiny" if smoke else "100m"
        announce_trl_stages(grpo_step, size)
        for r in grpo_step.run(reps=1 if smoke else 3, size=size):
            emit(r)
        return
    toy = smoke or phase == "smoke"
    config = smoke_config() if toy else get_preset("granite_speech_2b")
    paper_step(config, SMOKE if toy else PAPER, emit, lora_rank=4 if toy else 64,
               attention=phase != "smoke")


def die_with_parent() -> None:
    """On Linux, SIGKILL this phase when the run that started it dies (killed at a device
    command's time limit, say): a phase left running would hold the accelerator's memory."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.environ.get("DEVICE_RUN_PID") not in (None, str(os.getppid())):
        os._exit(1)  # the run died before the request took effect


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.device", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", choices=("smoke", "granite", "trl"),
                        help="run this one phase in this process (benchmarks.device_run "
                             "starts one such process per phase); without it, the whole run")
    parser.add_argument("--smoke", action="store_true", help="toy sizes (a CPU test)")
    parser.add_argument("--rows", default="",
                        help="with --phase: JSON-lines file to append each result row to")
    args, rest = parser.parse_known_args(argv)
    if args.phase is None:
        from benchmarks import device_run

        device_run.main(sys.argv[1:] if argv is None else list(argv))
        return
    if rest:
        parser.error(f"unrecognized arguments with --phase: {' '.join(rest)}")
    die_with_parent()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # where it was, when stopped
    log_long_compiles()

    def record(entry: dict) -> None:
        if args.rows:
            with open(args.rows, "a") as f:
                f.write(json.dumps(entry) + "\n")

    def emit(r: Row) -> None:
        record({"row": dataclasses.asdict(r)})
        print(f"[device] {r.case}: {r.ours.cell()} {r.unit} ({r.note})", flush=True)

    progress(f"phase {args.phase}: started; asking for the device")
    record({"device": describe_device()})
    run_phase(args.phase, args.smoke, emit)
    progress(f"phase {args.phase}: done")


if __name__ == "__main__":
    main()
