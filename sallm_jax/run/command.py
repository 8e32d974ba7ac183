"""What the commands that run stages share: their log lines and their exit status
(`python -m sallm_jax.main --help` lists them)."""

from __future__ import annotations

import logging as std_logging
import pathlib
import sys

import ml_collections
from absl import logging

from sallm_jax.rl.rewards import RewardFailing
from sallm_jax.run.experiment import run_experiment
from sallm_jax.train.health import TrainingDiverged
from sallm_jax.train.preemption import Preempted
from sallm_jax.train.workdir_lock import WorkdirLocked

EXIT_DIVERGED = 3  # a non-finite step (train.on_nonfinite) or a reward failing (grpo.reward_*)
EXIT_LOCKED = 4  # another run holds the work directory
EXIT_PREEMPTED = 5  # stopped by SIGTERM / SIGINT after saving a checkpoint; run again to resume
EXIT_INTERRUPTED = 130  # a second SIGINT stopped it at once (128 + SIGINT, as a shell reports)


def _own_info_only(record: std_logging.LogRecord) -> bool:
    """Keep the project's INFO lines and every library's warnings; drop libraries' INFO chatter."""
    return record.levelno >= std_logging.WARNING or "sallm_jax" in record.pathname


def log_own_info() -> None:
    """INFO lines from the project's code, warnings and errors from every library."""
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().addFilter(_own_info_only)


def run_or_exit(cfg: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
    """`run_experiment`'s results; a run that diverged, found its work directory locked or was
    stopped logs why and exits with its status."""
    try:
        return run_experiment(cfg, workdir)
    except (TrainingDiverged, RewardFailing) as error:  # a reason; nothing was written up
        logging.error("%s", error)
        sys.exit(EXIT_DIVERGED)
    except WorkdirLocked as error:
        logging.error("%s", error)
        sys.exit(EXIT_LOCKED)
    except Preempted as error:
        logging.warning("%s", error)
        sys.exit(EXIT_PREEMPTED)
    except KeyboardInterrupt:  # a second Ctrl-C: no step finished, no checkpoint saved
        logging.warning("stopped at once by a second SIGINT; the same command resumes from the "
                        "last checkpoint saved")
        sys.exit(EXIT_INTERRUPTED)
