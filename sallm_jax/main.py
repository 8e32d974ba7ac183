"""Entry point: `python -m sallm_jax.main --config=configs/sqa_grpo.py[:preset] [--workdir=DIR]`.

The config file is found from any directory (`configs/sqa_grpo.py` or the bare name `sqa_grpo`);
fields can be overridden on the command line, e.g. `--config.grpo.beta=0.02`.

Exit status: 0 done, 1 a fault of the program (with its traceback), 2 a config or data error (one
line naming the key or file; --debug for the traceback), 3 diverged, 4 the work directory is in
use, 5 stopped by a signal (run the same command again to resume), 130 stopped at once by a
second SIGINT.
"""

from __future__ import annotations

import logging as std_logging
import pathlib
import sys

from absl import flags, logging

from sallm_jax.rl.rewards import RewardFailing
from sallm_jax.run.config_file import config_stem, define_config_flag
from sallm_jax.run.experiment import run_experiment
from sallm_jax.runtime import user_errors
from sallm_jax.train.health import TrainingDiverged
from sallm_jax.train.preemption import Preempted
from sallm_jax.train.workdir_lock import WorkdirLocked

EXIT_DIVERGED = 3  # a non-finite step (train.on_nonfinite) or a reward failing (grpo.reward_*)
EXIT_LOCKED = 4  # another run holds the work directory
EXIT_PREEMPTED = 5  # stopped by SIGTERM / SIGINT after saving a checkpoint; run again to resume
EXIT_INTERRUPTED = 130  # a second SIGINT stopped it at once (128 + SIGINT, as a shell reports)

_CONFIG = define_config_flag("config", "Experiment config file: configs/<name>.py[:preset] or "
                             "<name>[:preset] (the shipped configs), or a path.",
                             lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Where checkpoints, logs and results go "
                               "(default: runs/<config file name>).")
flags.adopt_module_key_flags(user_errors)  # --debug, listed in this command's --help


def _own_info_only(record: std_logging.LogRecord) -> bool:
    """Keep the project's INFO lines and every library's warnings; drop libraries' INFO chatter."""
    return record.levelno >= std_logging.WARNING or "sallm_jax" in record.pathname


def main(argv: list[str]) -> None:
    del argv
    config = _CONFIG.value
    workdir = _WORKDIR.value or f"runs/{config_stem(flags.FLAGS['config'].config_filename)}"
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().addFilter(_own_info_only)
    try:
        run_experiment(config, pathlib.Path(workdir))
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


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    user_errors.run_command(main)
