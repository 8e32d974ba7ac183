"""Stop signals: SIGTERM (a scheduler taking the machine back) or SIGINT asks the run to stop, and
each phase honours it at its next item: `check(phase)` raises `Preempted`, the phase's `finally`
removes what it half wrote (its cache is never marked complete); training stages save first
(`train.preemption`). A second SIGINT stops at once (KeyboardInterrupt)."""

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
    """The run stopped on a stop signal; what it finished is kept, and the same command resumes."""


class StopSignal:
    """`with StopSignal():` SIGTERM / SIGINT handlers (main thread only) recording the request."""

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
    """Raise `Preempted` naming `phase` if a stop was requested. `collective`: at any process (every
    process must call it at the same point); else at this one (phases process 0 runs alone)."""
    pause_for_test(phase)
    if requested(collective):
        raise Preempted(f"[{phase}] stopped by {received()} before it finished; nothing of it "
                        "was kept half written, and the same command runs it again")


def pause_for_test(phase: str, step: int | None = None, where: str = "") -> None:
    """Under SALLM_JAX_PAUSE_AT="<phase or its start>[@<step>][:hold]", log "[<phase>] paused" at
    that phase's first call (with "@<step>": at `step`; a checkpoint write is "checkpoint
    <stage>/<step>") and wait for a stop signal (at most PAUSE_LIMIT_S, once per process), so it
    lands inside the phase; ":hold" outlasts a first signal (a second SIGINT ends it). `where` ends
    the log line."""
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
