"""Orbax checkpoints of the train state together with the grain iterator position."""

from __future__ import annotations

import pathlib

import grain
import jax
import orbax.checkpoint as ocp

from sallm_jax.train.state import TrainState


class Checkpointer:
    """Saves {state, data iterator} every `save_every` steps and restores the latest.

    Args:
      directory: where step folders are written (created if absent).
      save_every: steps between saves (the final step is always saved with `force`).
      max_to_keep: how many recent checkpoints stay on disk.
    """

    def __init__(self, directory: pathlib.Path, *, save_every: int, max_to_keep: int = 2):
        options = ocp.CheckpointManagerOptions(save_interval_steps=save_every,
                                               max_to_keep=max_to_keep, create=True)
        self.manager = ocp.CheckpointManager(pathlib.Path(directory).absolute(),
                                             options=options, item_names=("state", "data"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def will_save(self, step: int, *, force: bool = False) -> bool:
        """Whether `save(step, ..., force=force)` writes a checkpoint."""
        return force or self.manager.should_save(step)

    def kept_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: TrainState, data_iter: grain.DatasetIterator | None = None,
             *, force: bool = False) -> bool:
        items = {"state": ocp.args.StandardSave(state)}
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iter)
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def restore(self, abstract_state: TrainState, data_iter: grain.DatasetIterator | None = None,
                step: int | None = None) -> TrainState:
        """Restore `step` (default: latest) into the structure/shardings of `abstract_state`.

        `data_iter`, when given, is moved to the saved position in place.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.manager.directory}")
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
        items = {"state": ocp.args.StandardRestore(target)}
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

    def save_now(self, step: int, state: TrainState,
                 data_iter: grain.DatasetIterator | None = None) -> None:
        """Save `step` unless it is saved already, and wait until it is on disk."""
        self.wait()
        if self.latest_step() != step:
            self.save(step, state, data_iter, force=True)
        self.wait()

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
