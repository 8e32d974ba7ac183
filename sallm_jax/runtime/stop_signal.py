"""Stop signals: SIGTERM (what schedulers send before they take a machine back) or SIGINT asks
the run to stop, and every phase honours it at its next item.

`with StopSignal():` installs the handlers (main thread only); they only record the request. A
phase calls `check(phase)` before each item of its work (a clip to synthesise, a text the
tokenizer learns from, a batch to evaluate), which raises `Preempted` once a stop was requested:
the phase's `finally` clauses remove what it had half written, and its cache is never marked
complete. Training stages instead save their checkpoint first (`train.preemption.stop_here`). A
second SIGINT stops at once (KeyboardInterrupt), for a user who does not want to wait.

Tests pause a phase where it starts: with SALLM_JAX_PAUSE_AT=<phase name, or its start>, the
first `check` of that phase (of a training stage: after its first step, or the step "@<step>"
names; of a checkpoint write, "checkpoint <stage>/<step>": before Orbax renames its temporary
folder) logs "[<phase>] paused ..." and waits (at most PAUSE_LIMIT_S) until a stop is requested,
so that a signal sent on that line lands inside the phase on any machine (`pause_for_test`).
In a multi-process run, a phase that process 0 runs alone (a cache build) stops there only.
"""

from __future__ import annotations

import logging
import os
import signal
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

PAUSE_VARIABLE = "SALLM_JAX_PAUSE_AT"
PAUSE_LIMIT_S = 120.0


class Preempted(RuntimeError):
    """The run stopped on a stop signal; what it finished is kept, and running the same command
    again resumes."""


class StopSignal:
    """`with StopSignal():` installs handlers for SIGTERM and SIGINT (main thread only) that
    record the request, and makes `check` (and `train.preemption`) honour it."""

    def __init__(self):
        self.received: str | None = None
        self._previous = {}

    def __enter__(self) -> StopSignal:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _ACTIVE.remove(self)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.received == "SIGINT" and signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now
        if self.received is None:
            logging.warning("%s received: stopping at the end of the step or item under way "
                            "(a second Ctrl-C stops at once)", signal.Signals(signum).name)
        self.received = signal.Signals(signum).name

    def requested(self, collective: bool = True) -> bool:
        """Whether a stop signal arrived: at any process when `collective` and there are several
        (an all-gather, which every process must call), else at this one."""
        mine = self.received is not None
        if not collective or jax.process_count() == 1:
            return mine
        return bool(np.asarray(multihost_utils.process_allgather(np.array(mine))).any())


_ACTIVE: list[StopSignal] = []  # innermost last; empty when no run installed handlers
_PAUSED: set[str] = set()  # phases a test pause has held in this process


def requested(collective: bool = False) -> bool:
    """Whether a stop was requested (False when no `StopSignal` is in force: a library call)."""
    return bool(_ACTIVE) and _ACTIVE[-1].requested(collective)


def received() -> str:
    """The signal's name, for messages."""
    return (_ACTIVE[-1].received if _ACTIVE else None) or "a signal to another process"


def check(phase: str, *, collective: bool = False) -> None:
    """Raise `Preempted` naming `phase` if a stop was requested. `collective`: the processes
    agree (every process must call it at the same point: a phase they run in step, such as an
    evaluation); phases that process 0 runs alone (building a cache) look at their own."""
    pause_for_test(phase)
    if requested(collective):
        raise Preempted(f"[{phase}] stopped by {received()} before it finished; nothing of it "
                        "was kept half written, and the same command runs it again")


def pause_for_test(phase: str, step: int | None = None, where: str = "") -> None:
    """SALLM_JAX_PAUSE_AT's pause (module docstring), once per process. Its value is
    "<phase or its start>[@<step>][:hold]": with "@<step>" only the call at that `step` pauses;
    with ":hold" the pause outlasts a first signal, as a long step would (a second SIGINT ends
    it). `where` ends the log line ("after step 3")."""
    wanted, _, mode = os.environ.get(PAUSE_VARIABLE, "").partition(":")
    wanted, _, at = wanted.partition("@")
    if (not wanted or not phase.startswith(wanted) or not _ACTIVE or wanted in _PAUSED
            or (at and str(step) != at)):
        return
    _PAUSED.add(wanted)
    logging.info("[%s] paused%s until a stop signal (%s)", phase, where, PAUSE_VARIABLE)
    deadline = time.monotonic() + PAUSE_LIMIT_S
    while (mode == "hold" or _ACTIVE[-1].received is None) and time.monotonic() < deadline:
        time.sleep(0.02)
