"""Base models shipped with the package: `sallm_jax/bases/<key>/`, a Hugging Face checkpoint
directory written by `sallm-jax build-base`, named by the key of the settings that built it
(`base.base_directory`).

A run whose base settings have that key, and whose cache holds no finished base, loads the
shipped checkpoint like any other (`load_checkpoint`) into its cache instead of training it:
  model.safetensors, config.json, tokenizer and processor files   the checkpoint
  base.json        settings + held-out WER, as a cached build writes it
  build_log.jsonl  the build's logged training steps (`train/metrics.jsonl`)
  BUILD.md         the command, commit, machine and time of the build
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable

import jax
import numpy as np
from flax import nnx

from sallm_jax.data.tokenizer import save_atomically
from sallm_jax.models.hub.load import Checkpoint, load_checkpoint
from sallm_jax.runtime.record_files import read_json, write_atomically
from sallm_jax.train.base import settings_key

SHIPPED_DIR = pathlib.Path(__file__).resolve().parents[1] / "bases"
BUILD_LOG = "build_log.jsonl"


def shipped_base(directory: pathlib.Path) -> pathlib.Path | None:
    """The shipped base of the cache directory `directory`'s key in `SHIPPED_DIR`, or None."""
    shipped = SHIPPED_DIR / directory.name
    return shipped if (shipped / "base.json").is_file() else None


def params_like(model: nnx.Module, like: nnx.State) -> nnx.State:
    """`model`'s parameters in the structure of `like` (the run's model).

    Raises:
      ValueError naming the path when `like` holds a parameter `model` lacks or shapes differ,
      or when `model` holds one `like` lacks that is not a tied head (the transpose of one of
      its tables that `like` holds: a Qwen2-Audio checkpoint always carries its head).
    """
    held = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    wanted = nnx.to_flat_state(like)
    for path, variable in wanted:
        if path not in held or held[path].get_value().shape != variable.get_value().shape:
            raise ValueError(f"parameter {'/'.join(map(str, path))}: not in the checkpoint at "
                             f"shape {variable.get_value().shape}")
    tables = [np.asarray(held[path].get_value()) for path, v in wanted
              if v.get_value().ndim == 2]
    for path in held.keys() - {p for p, _ in wanted}:
        value = np.asarray(held[path].get_value())
        if not any(t.shape == value.T.shape and np.array_equal(t, value.T) for t in tables):
            raise ValueError(f"parameter {'/'.join(map(str, path))}: in the checkpoint, not in "
                             "the run's model, and not a tied head")
    return nnx.from_flat_state([(path, held[path]) for path, _ in wanted])


def load_shipped(shipped: pathlib.Path) -> tuple[dict, Checkpoint]:
    """(base.json record, checkpoint) of a shipped base.

    Raises:
      ValueError when base.json's settings do not hash to the folder's name.
    """
    record = read_json(shipped / "base.json")
    if settings_key(record["settings"]) != shipped.name:
        raise ValueError(f"{shipped / 'base.json'}: its settings hash to "
                         f"{settings_key(record['settings'])}, not to the folder's name")
    return record, load_checkpoint(shipped)


def install_tokenizer(checkpoint: Checkpoint, directory: pathlib.Path) -> None:
    """The shipped tokenizer into the cache `directory` (process 0)."""
    if jax.process_index() == 0:
        save_atomically(checkpoint.tokenizer, directory / "tokenizer")


def install_params(shipped: pathlib.Path, record: dict, checkpoint: Checkpoint,
                   directory: pathlib.Path, like: nnx.State,
                   save_params: Callable[[pathlib.Path, nnx.State], None]) -> None:
    """The shipped parameters into the cache `directory` in the structure of `like`
    (`params_like`; `save_params`, which every process calls), then on process 0 base.json
    (last: it marks the build complete) with `"shipped": <shipped>` added."""
    save_params(directory / "params", params_like(checkpoint.model, like), overwrite=True)
    if jax.process_index() == 0:
        record = {**record, "shipped": str(shipped)}
        write_atomically(directory / "base.json", json.dumps(record, indent=2) + "\n")
