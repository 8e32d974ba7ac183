"""Preemption: SIGTERM (what schedulers send before they take a machine back) or SIGINT asks
the run to stop. The training loops finish the step under way, save a checkpoint, and raise
`Preempted`; the same command then resumes from that step.

A second SIGINT stops at once (KeyboardInterrupt), for a user who does not want to wait. In a
multi-process run the processes agree every step (an all-gather of their flags), so all save
the same step even when the signal reached only some of them.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils


class Preempted(RuntimeError):
    """A stage saved its checkpoint after a stop signal; running again resumes there."""


class StopSignal:
    """`with StopSignal():` installs handlers for SIGTERM and SIGINT (main thread only) that
    record the request, and makes `stop_here` honour it."""

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
        self.received = signal.Signals(signum).name

    def requested(self) -> bool:
        """Whether any process received a stop signal (a collective when there are several)."""
        mine = self.received is not None
        if jax.process_count() == 1:
            return mine
        return bool(np.asarray(multihost_utils.process_allgather(np.array(mine))).any())


_ACTIVE: list[StopSignal] = []  # innermost last; empty when no run installed handlers


def stop_here(stage: str, step: int, save: Callable[[], None]) -> None:
    """If a stop was requested: `save()` (the stage's checkpoint of `step`), then raise
    `Preempted`. Nothing when no `StopSignal` is in force (a library call)."""
    if not _ACTIVE or not _ACTIVE[-1].requested():
        return
    save()
    raise Preempted(f"[{stage}] stopped by {_ACTIVE[-1].received or 'a signal to another process'}"
                    f" after step {step}; its checkpoint is saved, and the same command resumes "
                    "from it")


def stop_before(stage: str) -> None:
    """Raise `Preempted` if a stop was requested while no training step ran (data synthesis,
    evaluation): the stages finished so far are kept, `stage` has not started."""
    if _ACTIVE and _ACTIVE[-1].requested():
        raise Preempted(f"stopped by {_ACTIVE[-1].received or 'a signal to another process'} "
                        f"before stage {stage!r}; the finished stages are kept, and the same "
                        "command resumes from it")
