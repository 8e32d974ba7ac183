"""Multi-controller start-up: one process per host, joined through `jax.distributed`."""

from __future__ import annotations

import logging
import os

import jax
import ml_collections


def _cluster_detected() -> bool:
    """A multi-process launch that JAX can read from the environment (SLURM, TPU pods)."""
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1 or "TPU_WORKER_HOSTNAMES" in os.environ


def initialize(cfg: ml_collections.ConfigDict) -> None:
    """Join the other processes as `parallel.initialize` ("auto", "always", "never") says.

    "never": one process. Else an explicit `parallel.coordinator_address` (with num_processes,
    process_id), or JAX's detection with "always" (multi-host TPU slices) or "auto" when SLURM or
    TPU workers are detected. On CPU (or `parallel.cpu_collectives`) the collectives use gloo."""
    if jax.distributed.is_initialized():
        return
    explicit = bool(cfg.coordinator_address)
    if cfg.initialize not in ("auto", "always", "never"):
        raise ValueError(f"parallel.initialize: expected auto, always or never, got "
                         f"{cfg.initialize!r}")
    if cfg.initialize == "never" or (not explicit and cfg.initialize == "auto"
                                     and not _cluster_detected()):
        return
    if os.environ.get("JAX_PLATFORMS", "").startswith("cpu") or cfg.cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if explicit:
        jax.distributed.initialize(coordinator_address=cfg.coordinator_address,
                                   num_processes=cfg.num_processes, process_id=cfg.process_id)
    else:
        jax.distributed.initialize()
    logging.info("process %d of %d, %d local / %d global devices", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())
