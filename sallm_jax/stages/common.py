"""What the training stages share: parameters kept in the work directory once trained, and
the inputs every stage on the task's training split is given."""

from __future__ import annotations

import logging
from collections.abc import Callable

from flax import nnx

from sallm_jax.train.health import HealthCheck
from sallm_jax.train.params_io import restore_or_set_aside, save_params
from sallm_jax.train.wandb_mirror import wandb_settings


def kept_in_workdir(train: Callable) -> Callable:
    """A runner whose result is saved in <workdir>/<stage>/params and loaded from there once it
    exists (unreadable: the stage runs again, resuming from its last checkpoint)."""

    def run(experiment, name: str, start: nnx.State) -> nnx.State:
        directory = experiment.workdir / name / "params"
        if directory.exists():
            logging.info("[%s] already finished; loading its parameters", name)
            params = restore_or_set_aside(directory, start, experiment.partitioner,
                                          f"[{name}] the final parameters")
            if params is not None:
                return params
        params = train(experiment, name, start)
        save_params(directory, params)
        return params

    return run


def stage_inputs(experiment, name: str, max_target_tokens: int) -> dict:
    """What every training stage on the task's training split is given; its section is
    `cfg[name]` (batch_size, and eval_every / select_on for the best on validation)."""
    cfg = experiment.cfg
    section = cfg[name]
    return dict(graphdef=experiment.graphdef, frozen=experiment.frozen,
                rows=experiment.splits["train"], chat=experiment.chat,
                spec=experiment.spec(name, max_target_tokens),
                workdir=experiment.workdir / name, seed=cfg.seed,
                partitioner=experiment.partitioner, skip_log=experiment.skip_log,
                validate=(experiment.validator(section.select_on) if section.eval_every
                          else None),
                num_workers=cfg.data.num_workers, health=HealthCheck.from_config(cfg.train, name),
                wandb=wandb_settings(cfg, experiment.workdir))
