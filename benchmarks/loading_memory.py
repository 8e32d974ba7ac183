"""Peak host memory of loading and of exporting a checkpoint at real widths, against the bytes
of its parameters.

    python -m benchmarks.loading_memory [--dir DIR] [--layers 1] [--dtype float32]

A random Qwen2-Audio checkpoint at Qwen2-Audio-7B's widths, with `--layers` encoder and decoder
layers (1.51 B parameters at one layer: the 156,032-row embedding and head are most of it), is
written block by block in float32
(`sallm_jax.commands.random_checkpoint.write_random_weights`). A fresh
process then imports the package, notes its resident memory, loads the directory with
`load_checkpoint(dtype=...)`, and reads the peak (VmHWM). It then resets the peak
(/proc/self/clear_refs), exports the model with `export_hf` and reads it again. Both peaks are
reported above the resident memory just before each call, as a multiple of the loaded
parameters' bytes. Linux only (it reads /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from flax import nnx

from sallm_jax.commands.random_checkpoint import preset_config, write_random_weights

GIB = 1024**3


def _status(field: str) -> int:
    """A /proc/self/status memory field in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def measure(path: str, dtype: str, export_dir: str) -> dict:
    """In this process: load, then export; resident bytes before each and their peaks."""
    import jax

    from sallm_jax.models.hub.export import export_hf
    from sallm_jax.models.hub.load import load_checkpoint

    jax.block_until_ready(jax.numpy.zeros(1))  # the runtime's own start-up, outside the figure
    before_load = _status("VmRSS")
    start = time.perf_counter()
    model = load_checkpoint(path, dtype=dtype).model
    load_s = time.perf_counter() - start
    load_peak = _status("VmHWM")
    param_bytes = sum(x.nbytes for x in jax.tree.leaves(nnx.state(model)))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the present resident size
    before_export = _status("VmRSS")
    start = time.perf_counter()
    export_hf(model, export_dir)
    export_s = time.perf_counter() - start
    return {"param_bytes": param_bytes, "before_load": before_load, "load_peak": load_peak,
            "load_s": load_s, "before_export": before_export, "export_peak": _status("VmHWM"),
            "export_s": export_s}


def run(directory: str, layers: int = 1, dtype: str = "float32") -> dict:
    """Writes the checkpoint under `directory`, measures in a fresh process, returns the
    figures (bytes and seconds) with the parameter count."""
    source, exported = os.path.join(directory, "source"), os.path.join(directory, "exported")
    # Qwen2-Audio-7B's widths with `layers` encoder and decoder layers.
    config = preset_config("qwen2_audio_7b", layers=layers, encoder_layers=layers)
    count = write_random_weights(pathlib.Path(source), config, "float32")
    out = subprocess.run([sys.executable, "-m", "benchmarks.loading_memory", "--child", source,
                          "--dtype", dtype, "--export_dir", exported],
                         check=True, capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return {"num_params": count, **json.loads(out.stdout.strip().splitlines()[-1])}


def report(figures: dict) -> str:
    params = figures["param_bytes"]
    load = figures["load_peak"] - figures["before_load"]
    export = figures["export_peak"] - figures["before_export"]
    return (f"{figures['num_params'] / 1e9:.2f} B parameters, {params / GIB:.2f} GiB loaded; "
            f"load: peak {load / GIB:.2f} GiB above the {figures['before_load'] / GIB:.2f} GiB "
            f"resident before it ({load / params:.3f} x the parameters, "
            f"{figures['load_s']:.0f} s); export: peak {export / GIB:.2f} GiB above the "
            f"{figures['before_export'] / GIB:.2f} GiB resident before it "
            f"({export / params:.3f} x, {figures['export_s']:.0f} s)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loading_memory",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default="", help="where to write (default: a temporary one)")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--export_dir", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.dtype, args.export_dir)))
        return
    if args.dir:
        print(report(run(args.dir, args.layers, args.dtype)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        print(report(run(tmp, args.layers, args.dtype)))


if __name__ == "__main__":
    main()
