"""One run per work directory: a second holder is refused with the first's identity, and a
holder that died (even by SIGKILL) leaves nothing in the way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from sallm_jax.train.workdir_lock import WorkdirLock, WorkdirLocked

HOLD = ("import pathlib, sys, time; from sallm_jax.train.workdir_lock import WorkdirLock\n"
        "with WorkdirLock(pathlib.Path(sys.argv[1])):\n"
        "    print('held', flush=True); time.sleep(600)\n")


def hold_in_a_subprocess(workdir):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(workdir)], stdout=subprocess.PIPE,
                            text=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                                os.path.abspath(__file__)))))
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_run_is_refused_naming_the_holder_until_it_dies(tmp_path):
    proc = hold_in_a_subprocess(tmp_path)
    try:
        with pytest.raises(WorkdirLocked, match=rf'in use by another run .*"pid": {proc.pid}'):
            with WorkdirLock(tmp_path):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.time() + 10
    while True:  # the kernel drops a dead holder's lock
        try:
            with WorkdirLock(tmp_path):
                break
        except WorkdirLocked:
            assert time.time() < deadline
            time.sleep(0.1)
