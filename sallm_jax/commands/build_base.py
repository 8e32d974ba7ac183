"""Build a config's base model and write it as a shipped base.

    sallm-jax build-base --config=configs/sqa_grpo.py [--out=sallm_jax/bases]

Runs the config's `base` stage alone (in $SALLM_JAX_CACHE, resuming an interrupted build; a
finished one is only written out), then writes <out>/<key>/ as `train.shipped_base` describes:
the Hugging Face checkpoint, base.json, build_log.jsonl and BUILD.md. The checkpoint is read
back and must hold the built parameters exactly. Exit status as `python -m sallm_jax.main`'s.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import jax
import ml_collections
import numpy as np
from absl import flags
from flax import nnx

from sallm_jax.models.hub.export import export_hf
from sallm_jax.models.hub.load import load_checkpoint
from sallm_jax.run.command import log_own_info, run_or_exit
from sallm_jax.run.config_file import define_config_flag
from sallm_jax.run.experiment import Experiment
from sallm_jax.runtime import user_errors
from sallm_jax.runtime.record_files import read_json
from sallm_jax.train.base import base_directory, default_cache_dir, is_built
from sallm_jax.train.params_io import restore_params
from sallm_jax.train.shipped_base import BUILD_LOG, SHIPPED_DIR, params_like

_CONFIG = define_config_flag("config", "Experiment config file whose base is built: "
                             "configs/<name>.py[:preset] or <name>[:preset], or a path.",
                             lock_config=False)
_OUT = flags.DEFINE_string("out", str(SHIPPED_DIR), "Where <key>/ is written.")
flags.adopt_module_key_flags(user_errors)


def base_only(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`cfg` running its base stage alone, built rather than taken from a shipped copy."""
    cfg = ml_collections.ConfigDict(cfg.to_dict())
    cfg.stages, cfg.base.use_shipped = ("base",), False
    return cfg


def built_model(experiment: Experiment) -> nnx.Module:
    """The experiment's model holding the base's cached parameters."""
    params = restore_params(experiment.base_dir / "params", experiment.initial,
                            experiment.partitioner)
    return nnx.merge(experiment.graphdef, params, experiment.frozen)


def loads_back(directory: pathlib.Path, model: nnx.Module) -> bool:
    """Whether the checkpoint in `directory` loads to `model`'s parameters bit for bit."""
    state = nnx.state(model, nnx.Param)
    back = params_like(load_checkpoint(directory).model, state)
    return all(np.array_equal(np.asarray(a.get_value()), np.asarray(b.get_value()))
               for (_, a), (_, b) in zip(nnx.to_flat_state(state), nnx.to_flat_state(back),
                                         strict=True))


def _commit() -> str:
    root = pathlib.Path(__file__).resolve().parents[2]
    found = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True)
    return found.stdout.strip() or "unknown"


def build_record(seconds: float | None, record: dict) -> str:
    """BUILD.md: the command, commit, machine, time and held-out WER of the build (`seconds`
    None: the cache held the finished build before the command ran)."""
    took = (f"{seconds / 60:.1f} min (the command's wall time)" if seconds is not None else
            "not measured here: the cache held the finished build, which the command wrote out")
    return "\n".join([
        "# Shipped base", "",
        f"- command: `{shlex.join(['sallm-jax', 'build-base', *sys.argv[1:]])}`",
        f"- commit: {_commit()}, {datetime.date.today().isoformat()}",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{jax.devices()[0].platform}",
        f"- build time: {took}",
        f"- held-out WER: {record['heldout_asr']['wer']:.2f} % "
        f"({record['heldout_asr']['num_examples']} clips, greedy)", ""])


def write_shipped(experiment: Experiment, out: pathlib.Path,
                  seconds: float | None) -> pathlib.Path:
    """<out>/<key>/ from the base built in the cache; ValueError when the written checkpoint
    does not load back to the same parameters."""
    model = built_model(experiment)
    target = out / experiment.base_dir.name
    staging = target.with_name(f"{target.name}.writing")
    shutil.rmtree(staging, ignore_errors=True)
    export_hf(model, staging, tokenizer=experiment.chat.tokenizer)
    if not loads_back(staging, model):
        raise ValueError(f"{staging}: the written checkpoint does not load back to the built "
                         "parameters")
    shutil.copyfile(experiment.base_dir / "base.json", staging / "base.json")
    record = read_json(staging / "base.json")
    shutil.copyfile(experiment.base_dir / "train" / "metrics.jsonl", staging / BUILD_LOG)
    (staging / "BUILD.md").write_text(build_record(seconds, record))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return target


def main(argv: list[str]) -> None:
    del argv
    cfg = base_only(_CONFIG.value)
    log_own_info()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as workdir:
        workdir = pathlib.Path(workdir)
        cached = is_built(base_directory(cfg, default_cache_dir()))
        run_or_exit(cfg, workdir / "build")
        seconds = None if cached else time.monotonic() - started
        target = write_shipped(Experiment(cfg, workdir / "export"), pathlib.Path(_OUT.value),
                               seconds)
    print(f"shipped base written to {target}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    user_errors.run_command(main)
