"""Stage progress: the rate leaves out the compiling first step, and the ETA follows from it."""

from __future__ import annotations

from sallm_jax.train.progress import StageProgress, duration


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rate_and_eta_leave_out_the_first_step_of_a_start():
    clock = Clock()
    progress = StageProgress("sft", total=100, start_step=40, clock=clock, bar=False)
    clock.now = 30.0  # the first step of this start compiles
    progress.step_done(41)
    assert progress.describe(41) == "41/100 (41%)"
    clock.now = 40.0  # then 4 steps in 10 s
    progress.step_done(45)
    assert progress.rate(45) == 0.4
    assert progress.describe(45) == "45/100 (45%), 0.4 steps/s, ETA 2m18s"


def test_durations():
    assert [duration(s) for s in (42, 185, 3725)] == ["42s", "3m05s", "1h02m"]
