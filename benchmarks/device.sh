#!/usr/bin/env bash
# The accelerator run (benchmarks/device_run.py), runnable on a bare device machine:
#   bash benchmarks/device.sh [--wheels DIR] [--smoke] [--no_peer] [--out FILE]
#                             [--smoke_s 60] [--granite_s 300] [--trl_s 120] [--grace_s 5]
#                             [--phases smoke,granite,trl] [--commit SHA]
# Phases in order, each its own process under its own wall-clock budget: smoke (toy widths),
# granite_speech_2b at the papers' shapes (build, compile per program, steps), the TRL
# comparison at 100M. Every line is time-stamped (UTC, seconds since start); a phase over
# its budget is stopped and the run goes on; the Markdown table (--out, default
# benchmarks/DEVICE.md) is always written, a row per phase. The defaults end by 495 s,
# inside a 10-minute lease with the machine's start.
# --wheels DIR: packages the machine lacks, as wheels for its Python, which
# `bash benchmarks/device_wheels.sh DIR` downloads beforehand (for the lent H200: Python 3.12,
# manylinux x86-64). They are installed beside the machine's own packages without their
# dependencies; the project runs from the checkout. The remaining options go to
# `python -m benchmarks.device_run`. A device copy of the checkout may lack .git: pass
# --commit "$(git rev-parse --short HEAD)" from here to name the commit in the table.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE_SH_COMMAND="bash benchmarks/device.sh$(printf ' %q' "$@")"
export DEVICE_SH_COMMAND
if [ "${1:-}" = "--wheels" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/sallm_jax_site "$2"/*.whl
  export PYTHONPATH="/tmp/sallm_jax_site${PYTHONPATH:+:$PYTHONPATH}"
  shift 2
fi
export PYTHONUNBUFFERED=1
exec python3 -m benchmarks.device_run "$@"
