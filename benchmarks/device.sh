#!/usr/bin/env bash
# The accelerator benchmark (benchmarks/device.py), runnable on a bare device machine:
#   bash benchmarks/device.sh [--wheels DIR] [--smoke] [--no_peer] [--out FILE]
# --wheels DIR: packages the machine lacks, as wheels for its Python, which
# `bash benchmarks/device_wheels.sh DIR` downloads beforehand (for the lent H200: Python 3.12,
# manylinux x86-64). They are installed beside the machine's own packages without their
# dependencies; the project runs from the checkout. The remaining options go to
# `python -m benchmarks.device`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--wheels" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/sallm_jax_site "$2"/*.whl
  export PYTHONPATH="/tmp/sallm_jax_site${PYTHONPATH:+:$PYTHONPATH}"
  shift 2
fi
export PYTHONUNBUFFERED=1
exec python3 -m benchmarks.device "$@"
