"""Progress of a long phase: steps, rate (each start's compiling first step left out) and ETA, as a
tqdm bar on a terminal (log lines printed above it), as log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TypeVar

from tqdm import tqdm

LOG_EVERY_S = 30.0  # seconds between the log lines of a phase `track` follows
T = TypeVar("T")


class _AboveTheBars(logging.Handler):
    """Writes what a console handler would (its level, filters and format) with tqdm.write."""

    def __init__(self, console: logging.Handler):
        super().__init__(console.level)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        if self.console.filter(record):
            tqdm.write(self.console.format(record), file=sys.stderr)


def _writes_to_console(handler: logging.Handler) -> bool:
    # absl's handler writes through the stream handler it wraps.
    stream = getattr(getattr(handler, "python_handler", handler), "stream", None)
    return stream is not None and stream in (sys.stderr, sys.stdout)


def _log_above_the_bars() -> list[tuple[logging.Handler, logging.Handler]]:
    """Swap the root logger's console handlers for `_AboveTheBars`; the (console, swap) pairs."""
    root = logging.getLogger()
    swaps = [(h, _AboveTheBars(h)) for h in root.handlers if _writes_to_console(h)]
    for console, swap in swaps:
        root.removeHandler(console)
        root.addHandler(swap)
    return swaps


def duration(seconds: float) -> str:
    """Seconds as 42s, 3m05s or 1h02m."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class StageProgress:
    """`step_done(step, scalars)` after each step, `describe(step)` for a log line; `unit`: "step",
    "clip", "batch"; `leave`: tqdm's (None: clear the bar only when nested)."""

    def __init__(self, stage: str, total: int, start_step: int = 0,
                 clock: Callable[[], float] = time.perf_counter, bar: bool | None = None,
                 unit: str = "step", leave: bool | None = True):
        self.stage, self.total, self.clock, self.unit = stage, total, clock, unit
        self.first: tuple[int, float] | None = None  # (step, time) once the first step is done
        self.last = start_step
        self.logged: float | None = None  # when log_if_due last logged
        show = sys.stderr.isatty() if bar is None else bar
        self.bar = (tqdm(total=total, initial=start_step, desc=stage, unit=unit,
                         dynamic_ncols=True, leave=leave) if show else None)
        self.swaps = _log_above_the_bars() if show else []

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
        units = self.unit + ("es" if self.unit.endswith("ch") else "s")  # steps, batches
        return f"{text}, {rate:.3g} {units}/s, ETA {duration((self.total - step) / rate)}"

    def log_if_due(self, step: int, every_s: float = LOG_EVERY_S) -> None:
        """Without a bar: log "[stage] describe(step)" first, last and every `every_s` seconds."""
        if self.bar is not None:
            return
        now = self.clock()
        if self.logged is None or step >= self.total or now - self.logged >= every_s:
            logging.info("[%s] %s", self.stage, self.describe(step))
            self.logged = now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        root = logging.getLogger()
        for console, swap in self.swaps:
            root.removeHandler(swap)
            root.addHandler(console)
        self.swaps = []


def track(items: Iterable[T], stage: str, total: int, unit: str = "step",
          leave: bool | None = True, bar: bool | None = None) -> Iterator[T]:
    """`items`, each a step of `stage` (of `total`) once its loop body ran; bar or log lines."""
    progress = StageProgress(stage, total, bar=bar, unit=unit, leave=leave)
    try:
        for step, item in enumerate(items, 1):
            yield item
            progress.step_done(step)
            progress.log_if_due(step)
    finally:
        progress.close()
