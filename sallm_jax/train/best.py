"""Keep the parameters that score best on the validation split (the papers' model selection:
never the test split). The record survives restarts: `<stage>/best/` holds the parameters and
`<stage>/best.json` the step and score."""

from __future__ import annotations

import json
import logging
import pathlib
from collections.abc import Callable

import jax
import orbax.checkpoint as ocp
from flax import nnx

from sallm_jax.parallel.partitioner import Partitioner


class BestKeeper:
    """Scores parameters with `score` (higher is better) every `every` steps and keeps the best
    on disk, the starting parameters (step 0) included."""

    def __init__(self, directory: pathlib.Path, score: Callable[[nnx.State], float],
                 partitioner: Partitioner, every: int = 1):
        self.directory, self.score_fn, self.partitioner = directory, score, partitioner
        self.every = every
        record = directory.with_suffix(".json")
        self.record = json.loads(record.read_text()) if record.exists() else None

    def start(self, params: nnx.State) -> None:
        """Score the starting parameters, unless a resumed run already did."""
        if self.record is None:
            self.consider(0, params)

    def after_step(self, step: int, last_step: int, params: nnx.State) -> float | None:
        """The validation score of `params` after `step` updates, on every `every`-th step and
        the last; None on the others."""
        if step % self.every == 0 or step == last_step:
            return self.consider(step, params)
        return None

    def consider(self, step: int, params: nnx.State) -> float:
        """Score `params` (after `step` updates); save them if they beat the best so far."""
        score = float(self.score_fn(params))
        logging.info("[best] step %d: validation score %.3f", step, score)
        if self.record is None or score > self.record["score"]:
            self.record = {"step": step, "score": score}
            with ocp.StandardCheckpointer() as ckptr:
                ckptr.save(self.directory.absolute(), params, force=True)
            if jax.process_index() == 0:
                self.directory.with_suffix(".json").write_text(json.dumps(self.record))
        return score

    def best(self, like: nnx.State) -> nnx.State:
        """The kept parameters, laid out like `like`."""
        logging.info("[best] keeping step %d (validation score %.3f)", self.record["step"],
                     self.record["score"])
        target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                              like, self.partitioner.param_shardings(like))
        with ocp.StandardCheckpointer() as ckptr:
            return ckptr.restore(self.directory.absolute(), target)
