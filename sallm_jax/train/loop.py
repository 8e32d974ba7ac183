"""The loop every training stage runs in (`TrainingLoop`): checkpoints and resume, records,
validation, health, progress, preemption; a stage brings its `StageSteps`."""

from __future__ import annotations

import dataclasses
import functools
import logging
import pathlib
import time
from collections.abc import Callable, Mapping, Sequence

import jax
import ml_collections
import optax
from flax import nnx

from sallm_jax.data.bad_input import SkipLog
from sallm_jax.data.chat_format import ChatFormat
from sallm_jax.data.manifest import ManifestRow
from sallm_jax.data.pipeline import BatchSpec, training_dataset
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.runtime.progress import StageProgress
from sallm_jax.train.best import BestKeeper
from sallm_jax.train.checkpoint import Checkpointer
from sallm_jax.train.health import HealthCheck
from sallm_jax.train.metric_writer import MetricWriter
from sallm_jax.train.preemption import stop_here
from sallm_jax.train.state import TrainState, sharded_train_state
from sallm_jax.train.wandb_mirror import WandbSettings


@dataclasses.dataclass
class StepResult:
    """What one step reports to the loop."""

    metrics: Mapping[str, jax.Array]  # the update's, "finite" included (the health check's)
    progress: dict[str, float]  # shown on the progress bar
    scalars: Callable[[float], dict[str, float]]  # seconds of the step -> the logged record


class StageSteps:
    """A training stage's own part: `step`; `check` and `record` do nothing unless overridden."""

    def step(self, state: TrainState, step: int) -> tuple[TrainState, StepResult]:
        """Step `step + 1` from `state` (donated): (new state, its result)."""
        raise NotImplementedError

    def check(self, step: int, result: StepResult) -> None:
        """Watches after step `step`'s health check; may raise to stop the stage."""

    def record(self, step: int, writer: MetricWriter) -> None:
        """Records of step `step` beyond the scalars."""


class TrainingLoop:
    """The skeleton of training stage `name`, configured by its section `cfg` (steps, batch_size,
    checkpoint_every, log_every, eval_every). `params` stay untouched (the state starts from a
    copy). `spec.batch_size` is this process's share. A step runs `updates_per_step` updates (GRPO's
    num_iterations), named `counter` in the resume log. With `validate` (params -> score, higher is
    better) and `cfg.eval_every` > 0, `run` returns the best of the start and every `eval_every`-th
    step. The data holds `batches_per_step` batches per step (the most a step may draw)."""

    def __init__(self, name: str, cfg: ml_collections.ConfigDict, *, params: nnx.State,
                 tx: optax.GradientTransformation, rows: Sequence[ManifestRow], chat: ChatFormat,
                 spec: BatchSpec, workdir: pathlib.Path, seed: int, partitioner: Partitioner,
                 skip_log: SkipLog | None = None, extras: dict | None = None,
                 validate: Callable[[nnx.State], float] | None = None, num_workers: int = 0,
                 health: HealthCheck | None = None, updates_per_step: int = 1,
                 counter: str = "step", wandb: WandbSettings | None = None,
                 batches_per_step: int = 1):
        self.name, self.cfg, self.updates_per_step = name, cfg, updates_per_step
        self.health = health or HealthCheck(stage=name)
        self.state, self.state_shardings = sharded_train_state(partitioner, params, tx,
                                                               copy=True, extras=extras)
        self.data_iter = iter(training_dataset(
            rows, chat, spec, num_batches=cfg.steps * batches_per_step, seed=seed,
            process_index=jax.process_index(), process_count=jax.process_count(),
            skip_log=skip_log, num_workers=num_workers))
        self.ckpt = Checkpointer(workdir / "checkpoints", save_every=cfg.checkpoint_every)
        restored = self.ckpt.resume(self.state, self.data_iter, stage=name)
        self.resumed = restored is not None
        if self.resumed:
            self.state = restored
            logging.info("[%s] resumed from %s %d", name, counter, int(self.state.step))
        self.writer = MetricWriter(workdir, name, resume_step=self.step, wandb=wandb)
        self.keeper = (BestKeeper(workdir / "best", validate, partitioner, cfg.eval_every)
                       if validate is not None and cfg.eval_every else None)

    @property
    def step(self) -> int:
        """Steps done."""
        return int(self.state.step) // self.updates_per_step

    def save(self, step: int, *, force: bool = False, now: bool = False) -> bool:
        """Checkpoint state and data position after `step` when due (`force`: always; `now`: always,
        and wait until on disk); whether a save started."""
        if now:
            self.ckpt.save_now(step, self.state, self.data_iter)
            return True
        return self.ckpt.save(step, self.state, self.data_iter, force=force)

    def run(self, steps: StageSteps,
            save: Callable[..., object] | None = None) -> nnx.State:
        """Run the steps left up to `cfg.steps`; the final (or best) parameters. `save` (same
        signature as `TrainingLoop.save`) replaces the loop's checkpointing."""
        save = save or self.save
        try:
            with self.ckpt:  # an error stops the background writer cleanly
                if self.keeper:
                    self.keeper.start(self.step, self.state.params)
                self._run(steps, save)
        finally:
            self.writer.close()
        return self.keeper.best(self.state.params) if self.keeper else self.state.params

    def _run(self, steps: StageSteps, save: Callable[..., object]) -> None:
        """The steps left up to `cfg.steps`, each followed by its records and checkpoint."""
        cfg, name = self.cfg, self.name
        progress = StageProgress(name, cfg.steps, self.step)
        while (step := self.step) < cfg.steps:
            start = time.perf_counter()
            self.state, result = steps.step(self.state, step)
            done = step + 1
            self.health.after_step(done, result.metrics)
            steps.check(done, result)
            progress.step_done(done, result.progress)
            if done % cfg.log_every == 0 or done == cfg.steps:
                self.writer.write(done, result.scalars(time.perf_counter() - start),
                                  progress.describe(done))
            steps.record(done, self.writer)
            if self.keeper and (score := self.keeper.after_step(done, cfg.steps,
                                                                self.state.params)) is not None:
                self.writer.write(done, {"validation_score": score})
            save(done, force=done == cfg.steps)
            stop_here(name, done, functools.partial(save, done, now=True))
        progress.close()
