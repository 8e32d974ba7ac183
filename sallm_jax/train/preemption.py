"""Preemption of a training stage: on SIGTERM or SIGINT (`stop_signal`) the training loops
finish the step under way, save a checkpoint, and raise `Preempted`; the same command then
resumes from that step.

In a multi-process run the processes agree every step (an all-gather of their flags), so all
save the same step even when the signal reached only some of them.
"""

from __future__ import annotations

from collections.abc import Callable

from sallm_jax.runtime.stop_signal import Preempted, StopSignal, pause_for_test, received, requested

__all__ = ["Preempted", "StopSignal", "stop_before", "stop_here"]


def stop_here(stage: str, step: int, save: Callable[[], None]) -> None:
    """If a stop was requested: `save()` (the stage's checkpoint of `step`), then raise
    `Preempted`. Nothing when no `StopSignal` is in force (a library call)."""
    pause_for_test(stage, step, f" after step {step}")
    if not requested(collective=True):
        return
    save()
    raise Preempted(f"[{stage}] stopped by {received()} after step {step}; its checkpoint is "
                    "saved, and the same command resumes from it")


def stop_before(stage: str) -> None:
    """Raise `Preempted` if a stop was requested between stages: the stages finished so far
    are kept, `stage` has not started."""
    if requested(collective=True):
        raise Preempted(f"stopped by {received()} before stage {stage!r}; the finished stages "
                        "are kept, and the same command resumes from it")
