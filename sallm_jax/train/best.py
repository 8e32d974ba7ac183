"""Keeps the parameters that score best on the validation split (never the test split) in
`<stage>/best-<step>/`, recorded atomically in `best.json` (step, score, directory)."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import shutil
from collections.abc import Callable

import jax
from flax import nnx

from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.train.params_io import restore_params, save_params

COLLAPSE = 0.5  # a validation score at most this share of a positive best is warned of


class BestKeeper:
    """Scores parameters (`score`: higher is better) every `every` steps; keeps the best on disk."""

    def __init__(self, directory: pathlib.Path, score: Callable[[nnx.State], float],
                 partitioner: Partitioner, every: int = 1):
        self.directory, self.score_fn, self.partitioner = directory, score, partitioner
        self.every = every
        self.record = self._recover()

    @property
    def _record_path(self) -> pathlib.Path:
        return self.directory.with_suffix(".json")

    def _recover(self) -> dict | None:
        """The saved record, or None when there is none or it cannot be trusted."""
        try:
            record = json.loads(self._record_path.read_text())
            saved = self.directory.parent / record.get("directory", self.directory.name)
        except FileNotFoundError:
            return None
        except (ValueError, AttributeError) as error:  # half-written or not a JSON object
            logging.warning("[best] %s is unreadable (%s); scoring the start again",
                            self._record_path, error)
            return None
        if not saved.is_dir():
            logging.warning("[best] %s names %s, which does not exist; scoring the start again",
                            self._record_path, saved)
            return None
        return record

    def start(self, step: int, params: nnx.State) -> None:
        """Score the starting parameters (after `step` updates) unless the record holds a score."""
        if self.record is None:
            self.consider(step, params)

    def after_step(self, step: int, last_step: int, params: nnx.State) -> float | None:
        """`params`' validation score on every `every`-th step and the last; None on others."""
        if step % self.every == 0 or step == last_step:
            return self.consider(step, params)
        return None

    def consider(self, step: int, params: nnx.State) -> float:
        """Score `params`; save them if they beat the best or tie with a later step's best."""
        score = float(self.score_fn(params))
        logging.info("[best] step %d: validation score %.3f", step, score)
        if self.record is not None and 0 < self.record["score"] and (
                score <= COLLAPSE * self.record["score"]):
            logging.warning("[best] step %d: validation score %.3f is half the best or less "
                            "(%.3f at step %d): the policy may have collapsed (a learning rate "
                            "too high?)", step, score, self.record["score"], self.record["step"])
        if self.record is None or score > self.record["score"] or (
                score == self.record["score"] and step < self.record["step"]):
            # The second case: a stage resumed behind a record written after its checkpoint
            # (a kill between the two); the uninterrupted run kept the first of equal scores.
            target = self.directory.parent / f"{self.directory.name}-{step}"
            save_params(target, params, overwrite=True)
            self.record = {"step": step, "score": score, "directory": target.name}
            if jax.process_index() == 0:
                temporary = self._record_path.with_suffix(".json.tmp")
                temporary.write_text(json.dumps(self.record))
                os.replace(temporary, self._record_path)
                for old in self.directory.parent.glob(f"{self.directory.name}*"):
                    if old.is_dir() and old != target:
                        shutil.rmtree(old)
        return score

    def best(self, like: nnx.State) -> nnx.State:
        """The kept parameters, laid out like `like`."""
        logging.info("[best] keeping step %d (validation score %.3f)", self.record["step"],
                     self.record["score"])
        saved = self.directory.parent / self.record.get("directory", self.directory.name)
        return restore_params(saved, like, self.partitioner)
