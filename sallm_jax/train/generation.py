"""One GRPO generation (`grpo.steps_per_generation` batches at the same parameters) kept beside a
checkpoint inside it: `<directory>/<first step>/process<i>.npz` holds this process's host batches,
rollouts and old log-probs; rewards are scored again (they depend on text and example only)."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil

import numpy as np

from sallm_jax.rl.rollout import Rollout


@dataclasses.dataclass
class SavedGeneration:
    """This process's part of a generation that starts after `first_step` stage steps."""

    first_step: int
    batches: list[dict[str, np.ndarray]]
    rollouts: list[Rollout]  # NumPy arrays; logp None when the sampler returned none
    old_logp: list[np.ndarray | None]  # None where the batch's first update is its only one


def _path(directory: pathlib.Path, first_step: int, process_index: int) -> pathlib.Path:
    return directory / str(first_step) / f"process{process_index}.npz"


def save_generation(directory: pathlib.Path, generation: SavedGeneration,
                    process_index: int) -> None:
    """Write this process's file (atomically: a killed write leaves no file)."""
    arrays = {}
    for j, (batch, out, old) in enumerate(zip(generation.batches, generation.rollouts,
                                             generation.old_logp, strict=True)):
        arrays.update({f"batch{j}/{k}": np.asarray(v) for k, v in batch.items()})
        arrays.update({f"rollout{j}/{k}": v for k, v in out._asdict().items() if v is not None})
        if old is not None:
            arrays[f"old_logp{j}"] = old
    path = _path(directory, generation.first_step, process_index)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp.npz")
    np.savez(temporary, num_batches=len(generation.batches), **arrays)
    os.replace(temporary, path)


def load_generation(directory: pathlib.Path, first_step: int,
                    process_index: int) -> SavedGeneration:
    """The generation `save_generation` wrote; FileNotFoundError naming the file if absent."""
    path = _path(directory, first_step, process_index)
    if not path.exists():
        raise FileNotFoundError(f"{path}: the checkpoint lies inside the generation that "
                                f"started after step {first_step}, whose samples are missing")
    with np.load(path) as f:
        stored = {k: f[k] for k in f.files}
    batches, rollouts, old_logp = [], [], []
    for j in range(int(stored.pop("num_batches"))):
        batches.append({k.split("/", 1)[1]: v for k, v in stored.items()
                        if k.startswith(f"batch{j}/")})
        rollouts.append(Rollout(**{k: stored.get(f"rollout{j}/{k}") for k in Rollout._fields}))
        old_logp.append(stored.get(f"old_logp{j}"))
    return SavedGeneration(first_step, batches, rollouts, old_logp)


def prune_generations(directory: pathlib.Path, keep_from: int) -> None:
    """Remove the generations that start before step `keep_from`."""
    if not directory.is_dir():
        return
    for child in directory.iterdir():
        if child.name.isdigit() and int(child.name) < keep_from:
            shutil.rmtree(child, ignore_errors=True)
