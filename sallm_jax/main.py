"""Entry point: `python -m sallm_jax.main --config=configs/sqa_grpo.py[:preset] [--workdir=DIR]`.

The config file is found from any directory (`configs/sqa_grpo.py` or the bare name `sqa_grpo`);
fields can be overridden on the command line, e.g. `--config.grpo.beta=0.02`.

Exit status: 0 done, 1 a fault of the program (with its traceback), 2 a config or data error (one
line naming the key or file; --debug for the traceback), 3 diverged, 4 the work directory is in
use, 5 stopped by a signal (run the same command again to resume), 130 stopped at once by a
second SIGINT.
"""

from __future__ import annotations

import pathlib

from absl import flags

from sallm_jax.run.command import log_own_info, run_or_exit
from sallm_jax.run.config_file import config_stem, define_config_flag
from sallm_jax.runtime import user_errors

_CONFIG = define_config_flag("config", "Experiment config file: configs/<name>.py[:preset] or "
                             "<name>[:preset] (the shipped configs), or a path.",
                             lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Where checkpoints, logs and results go "
                               "(default: runs/<config file name>).")
flags.adopt_module_key_flags(user_errors)  # --debug, listed in this command's --help


def main(argv: list[str]) -> None:
    del argv
    config = _CONFIG.value
    workdir = _WORKDIR.value or f"runs/{config_stem(flags.FLAGS['config'].config_filename)}"
    log_own_info()
    run_or_exit(config, pathlib.Path(workdir))


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    user_errors.run_command(main)
