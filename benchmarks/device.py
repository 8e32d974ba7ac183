"""One-shot accelerator benchmark: a GRPO step at the papers' shapes, and TRL side by side.

    python -m benchmarks.device [--smoke] [--out benchmarks/DEVICE.md] [--no_peer]
    bash benchmarks/device.sh [--smoke]          # the same, on a fresh device machine

Sized to finish in under 8 minutes on one GPU. On random weights at real widths (the
`granite_speech_2b` preset: 3.0 B parameters; bfloat16 storage and compute, LoRA r=64 on q/v
as float32 master weights, remat on, the decoder layers scanned) it measures, for the papers'
shapes (16 prompts x G=8, 256 text tokens + 10 s of audio per prompt, completions of 200
tokens, temperature 1, beta 0.04 against the adapters-off reference):

- the GRPO step (`GRPOStep`: rollout, host scoring, reference log-probs, update);
- the rollout alone, as completion tokens/s against the HBM roofline of decoding (every
  decode step reads the decoder's weights and the KV cache once);
- the update alone, as model FLOP/s against the card's dense bfloat16 peak (MFU; model FLOPs
  count no rematerialisation);
- peak device memory against `plan_memory`'s prediction;
- fused (cuDNN) against einsum attention in the update's forward pass: the largest difference
  of the completions' log-probs, and the time of each.

Then the `grpo_step` comparison with TRL's `GRPOTrainer` at the 100M size, both sides in float32
(`benchmarks/grpo_step.py`). `--smoke` shrinks every size so that CPU runs it in a minute
(tests/test_benchmarks_device.py); its numbers mean nothing. Rows are written as they finish,
so a run cut short still leaves what it measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.timing import Row, Stat
from sallm_jax.configs.base import base_config
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
from sallm_jax.rl.policy import completion_logprobs, merge_policy
from sallm_jax.step_memory import PlanInputs, plan_memory
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
    BatchNorm statistics mean 0 and variance 1."""

    def build():
        model = GraniteSpeechLM(config, rngs=nnx.Rngs(0), dtype=jnp.bfloat16,
                                param_dtype=jnp.bfloat16)
        apply_lora(model, rank=lora_rank, alpha=lora_rank, rngs=nnx.Rngs(1))
        return model

    model = nnx.eval_shape(build)
    state = nnx.state(model)
    named = [(jax.tree_util.keystr(path), leaf) for path, leaf in
             jax.tree.leaves_with_path(state)]

    def value(name: str, leaf, key):
        if "lora_b" in name or "batch_norm']['mean" in name:
            return jnp.zeros(leaf.shape, leaf.dtype)
        if "batch_norm']['var" in name:
            return jnp.ones(leaf.shape, leaf.dtype)
        return (0.02 * jax.random.normal(key, leaf.shape, jnp.float32)).astype(leaf.dtype)

    @jax.jit
    def draw(key):
        keys = jax.random.split(key, len(named))
        return [value(name, leaf, k) for (name, leaf), k in zip(named, keys, strict=True)]

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
    cfg = base_config().rl
    cfg.batch_size, cfg.group_size = shapes.batch, shapes.group
    cfg.max_completion_length = shapes.completion
    cfg.temperature, cfg.top_p, cfg.top_k = 1.0, 1.0, 0
    cfg.beta, cfg.num_iterations, cfg.micro_batch_size = 0.04, 1, 0
    cfg.reward_fns, cfg.reward_weights = ("bleu",), (1.0,)
    return cfg


def timed(fn: Callable[[], object], reps: int) -> tuple[float, list[float]]:
    """(seconds of the first, compiling call, seconds of each of `reps` more)."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - start
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return first, times


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
    """A time-stamped line, so that a run cut short shows where its time went."""
    print(f"[device +{time.perf_counter() - STARTED:.0f} s] {message}", flush=True)


def paper_step(config: GraniteSpeechConfig, shapes: Shapes, emit: Callable[[Row], None],
               lora_rank: int = 64) -> None:
    """The GRPO step and its parts at `shapes`; rows go to `emit` as they are measured. Each
    compiled program is first called on its own (rollout, reference log-probs, update), so
    that its compilation time shows; the whole step then reuses them."""
    device = jax.devices()[0]
    peak_flops, bandwidth = CEILINGS.get(device.device_kind, (float("nan"), float("nan")))
    progress("building the model (abstract, then drawn on the device)")
    model = random_model(config, lora_rank)
    set_remat(model, True)  # the default einsum attention; `attention_rows` tries fused
    set_scan_layers(model, True)  # 40 layers compiled once (benchmarks/compile_time.py)
    graphdef, params, frozen = nnx.split(model, LoRAParam, ...)
    partitioner = Partitioner(make_mesh({"data": -1}), ())
    cfg = rl_config(shapes)
    tx = make_optimizer(learning_rate=1e-5, warmup_steps=0, total_steps=100, weight_decay=0.0,
                        max_grad_norm=1.0)
    state, shardings = sharded_train_state(partitioner, params, tx, copy=True)
    batch, rows = host_batch(config, shapes)
    prompt_len = batch["prompt_ids"].shape[1]
    step = GRPOStep(cfg, graphdef=graphdef, tx=tx, state_shardings=shardings, frozen=frozen,
                    ref_params=None, rows=rows, chat=id_chat(config),
                    partitioner=partitioner)
    holder = {"state": state}
    device_in = partitioner.device_batch(batch)

    progress("rollout: compiling and timing")
    sample = lambda: step.sample(holder["state"].params, step.frozen, device_in,  # noqa: E731
                                 jax.random.key(2))
    first, times = timed(sample, shapes.reps)
    out = sample()
    tokens = float(np.asarray(out.mask).sum())
    per_step = decode_bytes_per_step(config, shapes, prompt_len)
    roofline = shapes.batch * shapes.group * bandwidth / per_step
    emit(row("rollout, completion tokens/s", "tokens/s", [tokens / t for t in times], roofline,
             "HBM roofline of decoding",
             f"{tokens:.0f} tokens per rollout (prefill and audio encoder included); roofline: "
             f"{shapes.batch * shapes.group} rows per step, {per_step / 1e9:.2f} GB read per step "
             f"at {bandwidth / 1e12:.1f} TB/s; first call {first:.1f} s (compilation)"))

    group = partitioner.to_global({"ids": np.asarray(out.ids), "mask": np.asarray(out.mask),
                                   "rewards": np.random.default_rng(0).random(
                                       (shapes.batch, shapes.group)).astype(np.float32),
                                   "off_policy": np.zeros(shapes.batch * shapes.group, bool)})
    progress("reference log-probs: compiling")
    ref_logp = jax.block_until_ready(step.ref_logprobs(
        holder["state"].params, step.frozen, device_in, group["ids"], group["mask"]))

    def update():
        holder["state"], metrics = step.update(holder["state"], step.frozen, device_in, group,
                                               None, ref_logp)
        return metrics

    progress("update: compiling and timing")
    first, times = timed(update, shapes.reps)
    flops = update_model_flops(config, shapes, prompt_len)
    emit(row("update, model FLOP/s (MFU)", "TFLOP/s", [flops / t / 1e12 for t in times],
             peak_flops / 1e12, "dense bf16 peak (datasheet)",
             f"{flops / 1e12:.1f} model TFLOPs per update (forward + backward to activations, "
             f"remat not counted); {np.median(times):.2f} s per update; first call {first:.1f} s "
             "(compilation)"))

    def full_step():
        holder["state"], metrics, _ = step(holder["state"], batch, jax.random.key(1))
        return metrics

    progress("whole GRPO step: timing")
    _, times = timed(full_step, shapes.reps)
    emit(row(f"GRPO step, {shapes.batch} x G={shapes.group}, prompt {prompt_len} "
             f"({shapes.text_tokens} text + {shapes.audio_s:g} s audio), completion "
             f"{shapes.completion}", "s/step", times, float("nan"), "-",
             "rollout + host scoring + reference log-probs + update, all compiled"))

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
                 "= `python -m sallm_jax.plan_memory --preset granite_speech_2b --remat full "
                 f"--lora_rank {lora_rank} --prompt_len {prompt_len} ...`"))

    progress("fused against einsum attention: compiling both forward passes")
    for r in attention_rows(graphdef, holder["state"].params, step.frozen, device_in, group, cfg,
                            shapes.reps):
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
    times = {name: timed(fn, reps)[1] for name, fn in (("fused", fused), ("einsum", einsum))}
    kernel = ("cuDNN fused attention" if uses_cudnn else
              "XLA path (no cuDNN attention call in the program)")
    return [row("fused vs einsum attention, completion log-probs", "max abs diff",
                [float(diff.max())], float(np.abs(np.asarray(einsum())[mask]).mean()),
                "mean |log-prob|",
                f"median abs diff {np.median(diff):.2e} over {mask.sum()} tokens; {kernel}"),
            row("log-prob forward pass, fused attention", "s", times["fused"],
                float(np.median(times["einsum"])), "einsum attention (s)",
                f"{kernel}; measured / reference < 1 means fused is faster")]


def table(rows: Sequence[Row]) -> str:
    head = ("| case | unit | measured | reference | reference is | measured / reference | "
            "note |\n|---|---|---|---|---|---|---|\n")
    return head + "".join(
        f"| {r.case} | {r.unit} | {r.ours.cell()} | {r.peer.median:.4g} | {r.peer_name} | "
        f"{r.ratio:.3g} | {r.note} |\n" for r in rows)


def header(command: str) -> str:
    import flax
    import transformers

    device = jax.devices()[0]
    return (f"# sallm_jax on an accelerator\n\n"
            f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n"
            f"- device: {device.device_kind} x {jax.device_count()} ({jax.default_backend()})\n"
            f"- versions: jax {jax.__version__}, flax {flax.__version__}, "
            f"transformers {transformers.__version__}\n- command: `{command}`\n\n")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.device", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="toy sizes (a CPU test)")
    parser.add_argument("--out", default="benchmarks/DEVICE.md", help="markdown file to write")
    parser.add_argument("--no_peer", action="store_true", help="skip the TRL comparison")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "benchmarks.device",
                          *(sys.argv[1:] if argv is None else argv)])
    rows: list[Row] = []
    text = header(command)

    def emit(r: Row) -> None:
        rows.append(r)
        with open(args.out, "w") as f:
            f.write(text + table(rows) + peer_text[0])
        print(f"[device] {r.case}: {r.ours.cell()} {r.unit} ({r.note})", flush=True)

    peer_text = [""]
    shapes = SMOKE if args.smoke else PAPER
    config = smoke_config() if args.smoke else get_preset("granite_speech_2b")
    paper_step(config, shapes, emit, lora_rank=4 if args.smoke else 64)
    if not args.no_peer:
        from benchmarks import grpo_step
        from benchmarks.run import table as peer_table

        try:
            peer_rows = grpo_step.run(reps=1 if args.smoke else 3,
                                      size="tiny" if args.smoke else "100m")
            peer_text[0] = "\n## Against TRL (float32 both sides)\n\n" + peer_table(peer_rows)
        except Exception as error:  # the measured rows above stand; say why this one is absent
            peer_text[0] = f"\n## Against TRL\n\nnot measured: {type(error).__name__}: {error}\n"
        with open(args.out, "w") as f:
            f.write(text + table(rows) + peer_text[0])
        print(peer_text[0], flush=True)


if __name__ == "__main__":
    main()
