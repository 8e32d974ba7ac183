"""Where the time of a benchmarked program goes, kernel by kernel, on the CPU.

    python -m benchmarks.profile rollout|grpo_step|features [--calls 3] [--top 25]

Runs sallm_jax's side of a benchmark (the tiny rollout at temperature 1, one whole GRPO step,
or the log-mel features of 32 clips at 30 s) under `jax.profiler` with XLA's per-kernel trace
annotations switched on (--xla_cpu_enable_xprof_traceme), then sums each compiled kernel's
time over the calls: the evidence behind "what limits it" in RESULTS.md. Kernel names are
XLA's (`ynn_fusion` is a matmul or reduction handed to YNNPACK, `transpose_copy_fusion` /
`copy_bitcast_fusion` a layout copy, other `*_fusion` elementwise loops); `launches` counts how
often a kernel ran per call, so the kernels of a decode step show the number of steps.
"""

from __future__ import annotations

import os
import sys

if "jax" in sys.modules:
    raise RuntimeError("benchmarks.profile must set XLA_FLAGS before jax is imported")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_cpu_enable_xprof_traceme=true").strip()

import argparse  # noqa: E402
import collections  # noqa: E402
import glob  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402

import jax  # noqa: E402

# XLA's kernel names ("ynn_fusion.12", "fft.5", "wrapped_reduce-window.6"); everything else in
# the trace is Python frames ("$..."), runtime spans ("ThunkExecutor::Execute", "Handle
# inputs", "shard_args") or control flow whose span holds its body's kernels (while, call).
_KERNEL = re.compile(r"^[a-z][a-z0-9_\-]*(\.\d+)?$")
_NOT_KERNELS = {"while", "conditional", "call", "shard_args"}


def kernel_times(trace_dir: str) -> tuple[collections.Counter, collections.Counter]:
    """(microseconds, launches) per kernel name in the newest trace under `trace_dir`."""
    path = sorted(glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True))[-1]
    with gzip.open(path) as f:
        events = json.load(f)["traceEvents"]
    micros, launches = collections.Counter(), collections.Counter()
    for event in events:
        name = event.get("name", "")
        if (event.get("ph") == "X" and _KERNEL.match(name)
                and name.split(".")[0] not in _NOT_KERNELS):
            micros[name] += event["dur"]
            launches[name] += 1
    return micros, launches


def kind(name: str) -> str:
    """The family of an XLA CPU kernel name: 'ynn_fusion.12' -> 'ynn_fusion'."""
    return name.split(".")[0]


def report(micros: collections.Counter, launches: collections.Counter, calls: int,
           wall_s: float, top: int) -> str:
    """Per-call totals, then kernels by family, then the `top` kernels."""
    total = sum(micros.values())
    lines = [f"per call: wall {1000 * wall_s / calls:.1f} ms (traced), kernels "
             f"{total / 1000 / calls:.1f} ms in {sum(launches.values()) // calls} launches of "
             f"{len(micros)} kernels", "", "by family:"]
    families, family_launches = collections.Counter(), collections.Counter()
    for name, us in micros.items():
        families[kind(name)] += us
        family_launches[kind(name)] += launches[name]
    lines += [f"  {fam:<36} {us / 1000 / calls:8.2f} ms  {family_launches[fam] // calls:6d} "
              f"launches  {us / total:5.1%}" for fam, us in families.most_common()]
    lines += ["", f"top {top} kernels:"]
    lines += [f"  {name:<36} {us / 1000 / calls:8.2f} ms  {launches[name] / calls:6.0f} launches"
              for name, us in micros.most_common(top)]
    return "\n".join(lines)


def rollout_call() -> Callable[[], None]:
    """The tiny rollout benchmark's program (temperature 1), compiled and warmed up."""
    from benchmarks import rollout
    from benchmarks.checkpoints import SIZES, save_random_checkpoint

    vocab = SIZES["tiny"]["text"]["vocab_size"]
    batch = rollout.prompt_batch(vocab, rollout.BATCH["tiny"])
    path = tempfile.mkdtemp()
    save_random_checkpoint("tiny", path)
    ours = rollout.Ours(path, vocab, temperature=1.0)
    ours.compile(batch)
    ours(batch)
    return lambda: ours(batch)


def grpo_step_call() -> Callable[[], None]:
    """One `GRPOStep` of the grpo_step benchmark, compiled and warmed up."""
    from benchmarks import grpo_step
    from sallm_jax.data.tokenizer import train_tokenizer

    tmp = tempfile.mkdtemp()
    rows = grpo_step.question_rows(grpo_step.BATCH, seed=1)
    corpus = [t for r in grpo_step.question_rows(2000, seed=2) for t in (r.question, r.answer)]
    tokenizer = train_tokenizer(corpus, f"{tmp}/tokenizer", vocab_size=512)
    grpo_step.save_text_model("tiny", len(tokenizer), f"{tmp}/speech", f"{tmp}/text")
    batch = grpo_step.host_batch(rows, tokenizer)
    ours = grpo_step.Ours(f"{tmp}/speech", rows, tokenizer)
    ours(batch)
    return lambda: ours(batch)


def features_call() -> Callable[[], None]:
    """Whisper log-mel (80 bins) of the features benchmark's 32 clips, each padded to 30 s."""
    import numpy as np

    from benchmarks import features
    from sallm_jax.audio.log_mel import SAMPLE_RATE, log_mel_spectrogram

    batch = features.pad_batch(features.speechlike_clips(), 30 * SAMPLE_RATE)
    np.asarray(log_mel_spectrogram(batch, num_mel_bins=80))
    return lambda: np.asarray(log_mel_spectrogram(batch, num_mel_bins=80))


PROGRAMS = {"rollout": rollout_call, "grpo_step": grpo_step_call, "features": features_call}


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    parser.add_argument("program", choices=sorted(PROGRAMS))
    parser.add_argument("--calls", type=int, default=3, help="traced calls (after a warm-up)")
    parser.add_argument("--top", type=int, default=25, help="kernels listed one by one")
    args = parser.parse_args(argv)
    call = PROGRAMS[args.program]()
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir)
        start = time.perf_counter()
        for _ in range(args.calls):
            call()
        wall_s = time.perf_counter() - start
        jax.profiler.stop_trace()
        micros, launches = kernel_times(trace_dir)
    text = report(micros, launches, args.calls, wall_s, args.top)
    print(text)
    return text


if __name__ == "__main__":
    main()
