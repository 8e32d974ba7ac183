"""Progress of a training stage: steps done, rate and time left, shown in the stage's log lines
and, when stderr is a terminal, as a live tqdm bar.

The rate leaves out the first step of each start (it compiles the step's programs) and the
steps a resumed stage ran before it restarted.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping

from tqdm import tqdm


def duration(seconds: float) -> str:
    """Seconds as 42s, 3m05s or 1h02m."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class StageProgress:
    """Call `step_done(step, scalars)` after each step; `describe(step)` for a log line."""

    def __init__(self, stage: str, total: int, start_step: int = 0,
                 clock: Callable[[], float] = time.perf_counter, bar: bool | None = None):
        self.stage, self.total, self.clock = stage, total, clock
        self.first: tuple[int, float] | None = None  # (step, time) once the first step is done
        self.last = start_step
        show = sys.stderr.isatty() if bar is None else bar
        self.bar = (tqdm(total=total, initial=start_step, desc=stage, unit="step",
                         dynamic_ncols=True) if show else None)

    def step_done(self, step: int, scalars: Mapping[str, float] | None = None) -> None:
        if self.first is None:
            self.first = (step, self.clock())
        if self.bar is not None:
            self.bar.update(step - self.last)
            if scalars:
                self.bar.set_postfix({k: f"{float(v):.4g}" for k, v in scalars.items()},
                                     refresh=False)
        self.last = step

    def rate(self, step: int) -> float | None:
        """Steps per second since the first step of this start, None before a second one."""
        if self.first is None or step <= self.first[0]:
            return None
        return (step - self.first[0]) / max(self.clock() - self.first[1], 1e-9)

    def describe(self, step: int) -> str:
        """"step/total (pct), rate, ETA" once a rate is known, "step/total (pct)" before."""
        text = f"{step}/{self.total} ({step / self.total:.0%})"
        rate = self.rate(step)
        if rate is None:
            return text
        return f"{text}, {rate:.3g} steps/s, ETA {duration((self.total - step) / rate)}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
