"""Run the side-by-side benchmarks and write a markdown table.

    python -m benchmarks.run [--only features,rollout,grpo_step,flops] [--out benchmarks/RESULTS.md]
                             [--full]

Needs the `benchmark` extra (torch, trl; transformers is a core dependency). Each comparison
times both sides in turns and reports medians with min-max; ratio = ours / peer of the medians
(higher is better).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import shlex
import sys
from collections.abc import Sequence

from benchmarks.timing import Row

BENCHMARKS = ("features", "rollout", "grpo_step", "flops")


def machine() -> str:
    """CPU model and logical core count from /proc/cpuinfo (falls back to `platform`)."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        models = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
        return f"{models[0]}, {len(models)} cores"
    except (OSError, IndexError):
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def versions() -> str:
    import jax
    import torch
    import transformers
    import trl

    return (f"jax {jax.__version__}, torch {torch.__version__}, "
            f"transformers {transformers.__version__}, trl {trl.__version__}")


def table(rows: Sequence[Row]) -> str:
    """Markdown table of `rows`: median (min-max) each side, ratio, target, met, note."""
    head = ("| benchmark | case | unit | sallm_jax | peer | peer is | ratio | paired ratio "
            "| target | met | note |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {r.benchmark} | {r.case} | {r.unit} | {r.ours.cell()} | {r.peer.cell()} | "
        f"{r.peer_name} | {r.ratio:.2f} | {r.paired.cell() if r.paired else ''} | "
        f"{'' if r.target is None else f'>= {r.target:g}'} | "
        f"{r.met} | {r.note} |\n" for r in rows)
    return head + body


def report(rows: Sequence[Row], command: str) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"# sallm_jax benchmarks\n\n- date: {now}\n- machine: {machine()}\n"
            f"- versions: {versions()}\n- command: `{command}`\n\n"
            "Medians with (min-max) over alternating runs (A, B, A, B, ...); ratio = sallm_jax / "
            "peer of the medians, higher is better; paired ratio = the same per round (each "
            "pair ran back to back), median (min-max). For `flops` the ratio is the fraction "
            "of the matmul rate. `met` compares the ratio of medians with the target.\n\n"
            + table(rows))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--out", default="benchmarks/RESULTS.md", help="markdown file to write")
    parser.add_argument("--full", action="store_true",
                        help="rollout of the 100m model at 8 prompts, as the issue states "
                             "(default 2: one transformers call takes minutes on 2 cores)")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {unknown}; expected some of {BENCHMARKS}")

    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    rows: list[Row] = []
    for name in chosen:
        print(f"[benchmarks] {name} ...", file=sys.stderr, flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        rows.extend(module.run(full=True) if name == "rollout" and args.full else module.run())
    command = shlex.join(["python", "-m", "benchmarks.run", *(sys.argv[1:] if argv is None
                                                             else argv)])
    text = report(rows, command)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
