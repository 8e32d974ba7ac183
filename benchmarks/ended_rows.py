"""Decode steps spent on rows that have ended: measured before any compaction is built.

The rollout (sallm_jax/rl/rollout.py) decodes every row of a batch until the last one has
ended: a row that ended early still goes through each remaining step. Dropping ended rows from
the loop (compacting the batch, or moving to a smaller compiled batch) pays only if both hold:
1. ended rows take a real share of a rollout's row-steps. A GRPO run's `metrics.jsonl` says
   how large: the loop runs as many steps as the longest completion, and each row is live for
   its own length (the end token included), so the ended share of a step is
   1 - completion_length / completion_length/max;
2. a decode step costs more with more rows. Timed here: the rollout program at 16, 8, 4 and 2
   prompts x G = 8, with an end token outside the vocabulary so that no row ends, at two
   completion lengths (8 and 40). Their difference over the extra steps is one decode step
   t(N) at N rows (averaged over caches of 8 to 40 slots), fitted as a + b N.

With both, perfect compaction (every step carrying only its live rows, the gathering free)
saves at most ended share x b N / (a + b N) of the decode loop. For an accelerator, where
decoding is bound by memory, the script adds the same bound from bytes: the share of a
decode step's HBM reads that grows with the rows (each row's own cache slots, read whole
every step) at the papers' shapes on granite_speech_2b, an estimate, not a measurement.

What a GRPO step as a whole could gain is that bound times the decode loop's share of the
step: for the run's model (`--run-size`, configs/sqa_grpo.py's is "tiny"), the loop's time is
estimated as its steps (the longest completion) x the full batch's timed decode step, against
the step's logged `step_seconds`.

    python -m benchmarks.ended_rows [--workdir runs/sqa_grpo] [--sizes tiny,100m] [--reps 3]
        [--run-size tiny]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
from collections.abc import Iterable, Sequence

import jax
import numpy as np
from flax import nnx

from benchmarks.checkpoints import MAX_SOURCE_POSITIONS, SIZES
from benchmarks.device import PAPER, Shapes, decode_read_bytes
from benchmarks.rollout import GROUP, prompt_batch
from benchmarks.timing import alternate
from sallm_jax.models.families import num_audio_tokens
from sallm_jax.models.granite_speech.config import GraniteSpeechConfig
from sallm_jax.models.presets import get_preset
from sallm_jax.models.qwen2_audio.config import Qwen2AudioConfig
from sallm_jax.models.qwen2_audio.model import Qwen2AudioLM
from sallm_jax.parallel.mesh import make_mesh
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.rl.rollout import SamplingConfig, make_rollout_fn

PROMPTS = (16, 8, 4, 2)  # x GROUP rows: the main job's 16 x 8 and smaller batches
STEPS = (8, 40)  # completion lengths whose difference is timed


def ended_shares(records: Iterable[dict]) -> list[float]:
    """Per logged GRPO step, the share of the rollout's row-steps spent on rows that had
    ended: 1 - mean length / longest length (the loop runs the longest row's steps)."""
    return [1.0 - r["completion_length"] / r["completion_length/max"] for r in records
            if r.get("completion_length/max", 0) > 0 and "completion_length" in r]


def decode_loop_shares(records: Iterable[dict], decode_step_s: float) -> list[float]:
    """Per logged GRPO step, the share of its `step_seconds` the rollout's decode loop takes,
    estimated as the loop's steps (the longest completion) x `decode_step_s`."""
    return [r["completion_length/max"] * decode_step_s / r["step_seconds"] for r in records
            if r.get("step_seconds", 0) > 0 and "completion_length/max" in r]


def read_metrics(path: pathlib.Path) -> list[dict]:
    """A stage's metrics.jsonl records."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def speech_lm_config(size: str) -> Qwen2AudioConfig:
    """benchmarks/checkpoints.py's `size`, its audio placeholder the last vocabulary id."""
    spec = SIZES[size]
    text = {k: v for k, v in spec["text"].items() if k != "vocab_size"}
    vocab = spec["text"]["vocab_size"]
    audio = {**spec["audio"], "max_source_positions": MAX_SOURCE_POSITIONS}
    return Qwen2AudioConfig.from_sizes(audio, text, vocab_size=vocab, audio_token_id=vocab - 1)


def decode_step_seconds(config: Qwen2AudioConfig, prompts: int, reps: int) -> list[float]:
    """Seconds of one decode step at `prompts` x GROUP rows, one value per round: the rollout
    at STEPS[1] completion tokens less the rollout at STEPS[0], over the extra steps."""
    partitioner = Partitioner(make_mesh({"data": -1}), ())
    graphdef, params, frozen = nnx.split(Qwen2AudioLM(config, rngs=nnx.Rngs(0)), nnx.Param, ...)
    params, frozen = partitioner.shard_params(params), partitioner.shard_params(frozen)
    batch = partitioner.to_global(prompt_batch(config.text.vocab_size, prompts))
    rng = jax.random.key(0)
    calls = {}
    for steps in STEPS:
        fn = make_rollout_fn(graphdef, partitioner.param_shardings(params),
                             partitioner.param_shardings(frozen), partitioner,
                             sampling=SamplingConfig(max_new_tokens=steps, temperature=1.0),
                             group_size=GROUP, eos_ids=(config.text.vocab_size,), pad_id=0)
        compiled = fn.lower(params, frozen, batch, rng).compile()

        def call(compiled=compiled):
            return np.asarray(compiled(params, frozen, batch, rng).ids)

        call()  # first run: buffers and thread pools
        calls[steps] = call
    times = alternate(calls, reps)
    short, long = STEPS
    return [(b - a) / (long - short) for a, b in zip(times[short], times[long], strict=True)]


def fit_line(rows: Sequence[int], seconds: Sequence[float]) -> tuple[float, float]:
    """(a, b) of the least-squares t = a + b N."""
    b, a = np.polyfit(np.asarray(rows, float), np.asarray(seconds, float), 1)
    return float(a), float(b)


def row_bytes_share(config: GraniteSpeechConfig, shapes: Shapes, prompt_len: int) -> float:
    """Share of a decode step's HBM reads that grows with the rows, in bfloat16: the rows'
    own cache slots (all `completion` of them, read whole every step) against those plus the
    decoder's matmul weights and each prompt's cache, read once per step."""
    fixed, rows = decode_read_bytes(config, shapes, prompt_len, shapes.completion)
    return rows / (rows + fixed)


def table(step_rows: dict[str, list[tuple[int, list[float]]]], shares: list[float],
          gpu_share: float, records: Sequence[dict] = (), run_size: str = "tiny") -> str:
    """The markdown report of the measurements and the bounds they give; with the run's
    `records`, also what that bound is worth in a whole GRPO step of `run_size`'s model."""
    out = ["| model | rows | decode step (ms), median (range) | vs the full batch |",
           "|---|---|---|---|"]
    bounds = []
    for size, measured in step_rows.items():
        medians = [statistics.median(s) for _, s in measured]
        for (n, s), m in zip(measured, medians, strict=True):
            out.append(f"| {size} | {n} | {1e3 * m:.3g} ({1e3 * min(s):.3g}-{1e3 * max(s):.3g})"
                       f" | {m / medians[0]:.2f} |")
        a, b = fit_line([n for n, _ in measured], medians)
        full = measured[0][0]
        bounds.append((size, a, b, b * full / (a + b * full)))
    out.append("")
    out.append("| model | a (ms) | b (ms per row) | share of a step that grows with the rows |")
    out.append("|---|---|---|---|")
    out += [f"| {size} | {1e3 * a:.3g} | {1e3 * b:.3g} | {share:.2f} |"
            for size, a, b, share in bounds]
    out.append(f"| granite_speech_2b, papers' shapes, HBM bytes (estimate) | - | - | "
               f"{gpu_share:.2f} |")
    out.append("")
    if shares:
        mean = statistics.mean(shares)
        out.append(f"Ended share of the rollout's row-steps over {len(shares)} logged GRPO "
                   f"steps: mean {mean:.3f}, range {min(shares):.3f}-{max(shares):.3f}.")
        out.append("")
        out.append("Most perfect compaction could save of the decode loop (ended share x "
                   "growing share):")
        out.append("")
        out += [f"- {size}: {mean * share:.3f}" for size, _, _, share in bounds]
        out.append(f"- granite_speech_2b, bytes estimate: {mean * gpu_share:.3f}")
        run = {size: share for size, _, _, share in bounds}.get(run_size)
        full_step_s = statistics.median(step_rows.get(run_size, [(0, [0.0])])[0][1])
        loop = decode_loop_shares(records, full_step_s)
        if run is not None and loop:
            whole = statistics.mean(loop)
            out.append("")
            out.append(f"The run's decode loop ({run_size}, {step_rows[run_size][0][0]} rows): "
                       f"{whole:.3f} of a GRPO step's `step_seconds` (range {min(loop):.3f}-"
                       f"{max(loop):.3f}), so perfect compaction could save at most "
                       f"{whole * mean * run:.3f} of a step.")
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ended_rows", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", help="a finished GRPO run: its grpo/metrics.jsonl")
    parser.add_argument("--sizes", default="tiny,100m", help="benchmarks/checkpoints.py sizes")
    parser.add_argument("--reps", type=int, default=3, help="timed rounds per batch size")
    parser.add_argument("--prompts", default=",".join(map(str, PROMPTS)),
                        help="prompts per batch to time (x 8 rows), the full batch first")
    parser.add_argument("--run-size", default="tiny", help="the size of the --workdir run's model")
    args = parser.parse_args(argv)
    records = (read_metrics(pathlib.Path(args.workdir) / "grpo" / "metrics.jsonl")
               if args.workdir else [])
    shares = ended_shares(records)
    prompts = [int(p) for p in args.prompts.split(",")]
    step_rows = {}
    for size in args.sizes.split(","):
        config = speech_lm_config(size)
        step_rows[size] = [(p * GROUP, decode_step_seconds(config, p, args.reps))
                           for p in prompts]
        print(f"[ended_rows] {size} timed", flush=True)
    granite = get_preset("granite_speech_2b")
    audio = int(num_audio_tokens(granite, int(PAPER.audio_s * 16000)))
    print(table(step_rows, shares, row_bytes_share(granite, PAPER, PAPER.text_tokens + audio),
                records, args.run_size), flush=True)


if __name__ == "__main__":
    main()
