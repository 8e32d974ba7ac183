"""Orbax checkpoints of the train state together with the grain iterator position."""

from __future__ import annotations

import logging
import pathlib
import shutil

import grain
import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from sallm_jax.runtime.long_text import shorten
from sallm_jax.runtime.stop_signal import pause_for_test
from sallm_jax.runtime.user_errors import UserError
from sallm_jax.train.damaged import is_damage, reason, set_aside
from sallm_jax.train.disk_errors import naming_the_disk, orbax_log_filter, tree_bytes
from sallm_jax.train.state import TrainState

TEMPORARY = "*.orbax-checkpoint-tmp*"  # a step folder Orbax has not finalised


class _Manager(ocp.CheckpointManager):
    """Orbax's manager with the tests' pause (`pause_for_test`) before each write is finalised."""

    def _finalize(self, step: int, steps_to_remove: list[int]) -> None:
        pause_for_test(f"checkpoint {pathlib.Path(self.directory).parent.name}/{step}",
                       where=" inside the write")
        super()._finalize(step, steps_to_remove)


class UnreadableCheckpoints(UserError):
    """A stage has checkpoints and none of them can be read; the message names the folder."""


class Checkpointer:
    """Saves {state, data iterator} to `directory` every `save_every` steps (in the background;
    `force` saves any step), restores the latest, keeps the newest `max_to_keep`. As a context
    manager it waits for the save under way and closes; a save failing while the block raises is
    only logged. Removes temporary step folders of failed or killed writes. DiskWriteError if the
    disk refuses."""

    def __init__(self, directory: pathlib.Path, *, save_every: int, max_to_keep: int = 2):
        options = ocp.CheckpointManagerOptions(save_interval_steps=save_every,
                                               max_to_keep=max_to_keep, create=True)
        self.directory = pathlib.Path(directory).absolute()
        if jax.process_index() == 0:  # what a killed run's write left: never finalised
            for folder in self.directory.glob(TEMPORARY):
                shutil.rmtree(folder, ignore_errors=True)
        self.manager = _Manager(self.directory, options=options, item_names=("state", "data"))
        self.needed = 0  # bytes of the last state saved
        logging.getLogger("absl").addFilter(orbax_log_filter)  # Orbax logs through absl

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def will_save(self, step: int, *, force: bool = False) -> bool:
        """Whether `save(step, ..., force=force)` writes a checkpoint."""
        return force or self.manager.should_save(step)

    def kept_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def _writing(self):
        """Where a failed write (this one, or the one under way) is reported from."""
        return naming_the_disk("a checkpoint", self.directory, self.needed)

    def save(self, step: int, state: TrainState, data_iter: grain.DatasetIterator | None = None,
             *, force: bool = False) -> bool:
        items = {"state": ocp.args.StandardSave(state)}
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iter)
        with self._writing():  # Orbax first waits for the save under way
            self.needed = max(self.needed, tree_bytes(state))
            return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def restore(self, abstract_state: TrainState, data_iter: grain.DatasetIterator | None = None,
                step: int | None = None) -> TrainState:
        """Restore `step` (default: latest) into `abstract_state`'s structure and shardings, moving
        `data_iter` to the saved position; FileNotFoundError when there is no checkpoint."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.manager.directory}")
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
        if not target.extras and "extras" not in ocp.StandardCheckpointHandler().metadata(
                self.directory / str(step) / "state").tree:
            # Written before TrainState had extras: the same tree without them.
            target = {"step": target.step, "params": target.params,
                      "opt_state": target.opt_state}
        items = {"state": ocp.args.StandardRestore(target)}
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        state = self.manager.restore(step, args=ocp.args.Composite(**items))["state"]
        return state if isinstance(state, TrainState) else TrainState(**state)

    def resume(self, abstract_state: TrainState, data_iter: grain.DatasetIterator | None = None,
               *, stage: str) -> TrainState | None:
        """The newest readable checkpoint (as `restore`) or None; damaged newer ones move to
        `<directory>.unreadable/`; `UnreadableCheckpoints` (naming why) if none is readable."""
        failed: list[tuple[int, Exception]] = []
        for step in sorted(self.kept_steps(), reverse=True):
            try:
                state = self.restore(abstract_state, data_iter, step)
            except Exception as error:
                if not is_damage(error):
                    raise
                failed.append((step, error))
                continue
            if failed:
                self._set_aside(failed, stage, step)
            return state
        if failed:
            reasons = "; ".join(f"step {step}: {reason(error)}" for step, error in failed)
            raise UnreadableCheckpoints(
                f"{self.directory}: no checkpoint of stage {stage!r} can be read ({reasons}); "
                "move the folder away to train the stage from its start")
        return None

    def _set_aside(self, failed: list[tuple[int, Exception]], stage: str, good: int) -> None:
        """Move the unreadable step folders of `failed` out of the manager's sight."""
        aside = self.directory.with_name(f"{self.directory.name}.unreadable")
        for step, error in failed:
            moved = set_aside(self.directory / str(step), aside)
            logging.warning("[%s] checkpoint %s cannot be read (%s); resuming from step %d "
                            "(the unreadable one is kept in %s)", stage,
                            self.directory / str(step), reason(error), good, moved)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("sallm_jax: unreadable checkpoints set aside")
        self.manager.reload()

    def save_now(self, step: int, state: TrainState,
                 data_iter: grain.DatasetIterator | None = None) -> None:
        """Save `step` unless it is saved already, and wait until it is on disk."""
        self.wait()
        if self.latest_step() != step:
            self.save(step, state, data_iter, force=True)
        self.wait()

    def wait(self) -> None:
        with self._writing():
            self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        try:
            self.wait()
        except Exception as failed:
            if error is None:
                raise
            logging.warning("the checkpoint under way failed too: %s", shorten(str(failed)))
        finally:
            self.close()
            if jax.process_index() == 0:
                for folder in self.directory.glob(TEMPORARY):
                    shutil.rmtree(folder, ignore_errors=True)
