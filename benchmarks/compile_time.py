"""What the layer scan saves in compilation: the GRPO rollout and the update's log-prob
gradient at the papers' shapes and real widths, lowered and compiled with the decoder's and
the audio encoder's layers unrolled and scanned (`model.scan_layers`).

    python -m benchmarks.compile_time [--smoke] [--out FILE]

On random weights that are never drawn: the programs are lowered from the parameters' shapes
alone (granite_speech_2b, 3.0 B parameters in bfloat16, LoRA r=64 on q/v, remat on; 16 prompts
x G=8, 256 text tokens + 10 s of audio, completions of 200 tokens), so the benchmark needs no
memory for weights and runs on this repository's CPU. The device run of benchmarks/DEVICE.md
did not get through the unrolled programs' compilation in 540 s on an H200; XLA's CPU
compiler stands in for it here. `--smoke` uses the device script's toy widths (a CPU test).
Prints a markdown table and writes it to --out when given.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from benchmarks.device import PAPER, SMOKE, Shapes, host_batch, smoke_config
from sallm_jax.models.granite_speech.config import GraniteSpeechConfig
from sallm_jax.models.granite_speech.model import GraniteSpeechLM
from sallm_jax.models.layer_scan import set_scan_layers
from sallm_jax.models.lora import LoRAParam, apply_lora
from sallm_jax.models.presets import get_preset
from sallm_jax.models.remat import set_remat
from sallm_jax.rl.policy import completion_logprobs, merge_policy
from sallm_jax.rl.rollout import SamplingConfig, rollout


def abstract_policy(config: GraniteSpeechConfig, lora_rank: int):
    """(graphdef, adapters, frozen) of the model in bfloat16 with LoRA on q/v, shapes only."""

    def build():
        model = GraniteSpeechLM(config, rngs=nnx.Rngs(0), dtype=jnp.bfloat16,
                                param_dtype=jnp.bfloat16)
        return apply_lora(model, rank=lora_rank, alpha=lora_rank, rngs=nnx.Rngs(1))

    return nnx.split(nnx.eval_shape(build), LoRAParam, ...)


def programs(graphdef, shapes: Shapes, scan: bool) -> dict:
    """The rollout and the log-prob gradient as functions of (adapters, frozen, batch, ...)."""

    def policy(adapters, frozen):
        model = set_remat(merge_policy(graphdef, adapters, frozen), True)
        return set_scan_layers(model, scan)

    sampling = SamplingConfig(max_new_tokens=shapes.completion, temperature=1.0)

    def sample(adapters, frozen, batch, rng):
        return rollout(policy(adapters, frozen), batch, rng, sampling=sampling,
                       group_size=shapes.group, eos_ids=(0,), pad_id=0)

    def gradient(adapters, frozen, batch, ids, mask):
        def total(a):
            return completion_logprobs(policy(a, frozen), batch, ids, mask,
                                       group_size=shapes.group).sum()

        return jax.grad(total)(adapters)

    return {"rollout": sample, "update's log-prob gradient": gradient}


def measure(fn, args) -> dict[str, float]:
    """Seconds to lower and to compile `jax.jit(fn)` on `args`, and the lowered program's
    size in lines of StableHLO (about one operation a line; characters would count the
    constants, which the audio front end's index tables dominate)."""
    start = time.perf_counter()
    lowered = jax.jit(fn).lower(*args)
    lowered_s = time.perf_counter() - start
    size = lowered.as_text().count("\n")
    start = time.perf_counter()
    lowered.compile()
    return {"lower_s": lowered_s, "compile_s": time.perf_counter() - start, "lines": size}


def run(config: GraniteSpeechConfig, shapes: Shapes, lora_rank: int) -> list[dict]:
    """One record per program and layout: program, layers, lower_s, compile_s, lines."""
    graphdef, adapters, frozen = abstract_policy(config, lora_rank)
    batch, _ = host_batch(config, shapes)
    batch = {k: v for k, v in batch.items() if k not in ("index", "valid")}
    rows = shapes.batch * shapes.group
    completions = jax.ShapeDtypeStruct((rows, shapes.completion), jnp.int32)
    inputs = {"rollout": (adapters, frozen, batch, jax.random.key(0)),
              "update's log-prob gradient": (adapters, frozen, batch, completions, completions)}
    records = []
    for scan in (False, True):
        for name, fn in programs(graphdef, shapes, scan).items():
            record = {"program": name, "layers": "scanned" if scan else "unrolled",
                      **measure(fn, inputs[name])}
            print(f"[compile_time] {record}", file=sys.stderr, flush=True)
            records.append(record)
    return records


def table(records: Sequence[dict]) -> str:
    """Markdown: each program's unrolled and scanned figures, and unrolled / scanned."""
    by = {(r["program"], r["layers"]): r for r in records}
    lines = ["| program | layers | lower (s) | compile (s) | StableHLO (lines) |",
             "|---|---|---|---|---|"]
    for program in dict.fromkeys(r["program"] for r in records):
        unrolled, scanned = by[program, "unrolled"], by[program, "scanned"]
        for r in (unrolled, scanned):
            lines.append(f"| {program} | {r['layers']} | {r['lower_s']:.1f} | "
                         f"{r['compile_s']:.1f} | {r['lines']} |")
        lines.append(f"| {program} | unrolled / scanned | "
                     f"{unrolled['lower_s'] / scanned['lower_s']:.1f}x | "
                     f"{unrolled['compile_s'] / scanned['compile_s']:.1f}x | "
                     f"{unrolled['lines'] / scanned['lines']:.1f}x |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compile_time",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="toy widths (a CPU test)")
    parser.add_argument("--out", default="", help="markdown file to write")
    args = parser.parse_args(argv)
    config = smoke_config() if args.smoke else get_preset("granite_speech_2b")
    shapes = SMOKE if args.smoke else PAPER
    records = run(config, shapes, lora_rank=4 if args.smoke else 64)
    command = shlex.join(["python", "-m", "benchmarks.compile_time",
                          *(sys.argv[1:] if argv is None else argv)])
    text = (f"- device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
            f"jax {jax.__version__}\n- command: `{command}`\n\n{table(records)}")
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
