#!/usr/bin/env bash
# The wheels that `benchmarks/device.sh --wheels DIR` installs on a bare device machine, fetched
# here from PyPI for the machine's Python (default 3.12, manylinux x86-64: the lent H200's):
#   bash benchmarks/device_wheels.sh [DIR] [PYTHON_VERSION]      # DIR defaults to .whl
# The device image has jax, flax, optax, orbax-checkpoint, transformers, torch, sacrebleu, tqdm
# and matplotlib; these are the rest of what the project and the TRL comparison import, except
# pyarrow (55 MiB, which `datasets` and so TRL import): without it in the image the comparison
# reports itself not measured. DIR (.whl) is git-ignored; hand it to the device tool's `carry`
# (64 MiB in all, the checkout included; these take about 9 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-.whl}"
python_version="${2:-3.12}"
packages=(grain array-record portpicker ml-collections tensorboardX soundfile soxr cffi
          pycparser trl accelerate datasets dill multiprocess xxhash)
python3 -m pip download -q --dest "$dir" --no-deps --only-binary=:all: \
  --python-version "$python_version" --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 "${packages[@]}"
du -sh "$dir"
ls "$dir"
