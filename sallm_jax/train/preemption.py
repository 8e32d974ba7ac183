"""Preemption of a training stage: on SIGTERM / SIGINT (`runtime.stop_signal`) save the step under
way and raise `Preempted`; the processes agree every step (an all-gather)."""

from __future__ import annotations

from collections.abc import Callable

from sallm_jax.runtime.stop_signal import Preempted, StopSignal, pause_for_test, received, requested

__all__ = ["Preempted", "StopSignal", "stop_before", "stop_here"]


def stop_here(stage: str, step: int, save: Callable[[], None]) -> None:
    """`save()`, then raise `Preempted`, if a stop was requested (no-op without a `StopSignal`)."""
    pause_for_test(stage, step, f" after step {step}")
    if not requested(collective=True):
        return
    save()
    raise Preempted(f"[{stage}] stopped by {received()} after step {step}; its checkpoint is "
                    "saved, and the same command resumes from it")


def stop_before(stage: str) -> None:
    """Raise `Preempted` if a stop was requested before `stage` starts; finished stages are kept."""
    if requested(collective=True):
        raise Preempted(f"stopped by {received()} before stage {stage!r}; the finished stages "
                        "are kept, and the same command resumes from it")
