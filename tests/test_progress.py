"""Stage progress: the rate leaves out the compiling first step, and the ETA follows from it;
phases without log lines of their own log one now and then, or draw a bar on a terminal."""

from __future__ import annotations

import logging
import re
import sys

from sallm_jax.runtime.progress import StageProgress, duration, track


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


def test_log_lines_at_the_first_and_last_step_and_every_interval(caplog):
    clock = Clock()
    progress = StageProgress("synth sqa", total=10, clock=clock, bar=False, unit="clip")
    caplog.set_level(logging.INFO)
    for step, now in zip(range(1, 11), (1, 2, 3, 31, 32, 40, 61.5, 62, 63, 64), strict=True):
        clock.now = now
        progress.step_done(step)
        progress.log_if_due(step, every_s=30)
    # Logged at step 1 (t=1), 4 (t=31, 30 s later), 7 (t=61.5) and the last; rate from step 1.
    assert [r.getMessage() for r in caplog.records] == [
        "[synth sqa] 1/10 (10%)",
        "[synth sqa] 4/10 (40%), 0.1 clips/s, ETA 1m00s",
        "[synth sqa] 7/10 (70%), 0.0992 clips/s, ETA 30s",
        "[synth sqa] 10/10 (100%), 0.143 clips/s, ETA 0s"]


def test_track_yields_every_item_and_logs_without_a_terminal(caplog):
    caplog.set_level(logging.INFO)
    assert list(track(iter("abc"), "eval sft/test", 3, unit="batch", bar=False)) == list("abc")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "[eval sft/test] 1/3 (33%)"
    assert lines[-1].startswith("[eval sft/test] 3/3 (100%), ") and " batches/s" in lines[-1]


def test_track_draws_a_bar_on_a_terminal(capsys, caplog):
    caplog.set_level(logging.INFO)
    assert list(track(range(4), "synth asr", 4, unit="clip", bar=True)) == [0, 1, 2, 3]
    err = capsys.readouterr().err
    assert "synth asr" in err and "4/4" in err and "clip/s" in err
    assert not caplog.records  # the bar replaces the log lines


def test_log_lines_print_above_a_bar_through_the_console_handlers_filters(capsys):
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("LOG %(message)s"))
    console.addFilter(lambda record: "chatter" not in record.getMessage())
    root = logging.getLogger()
    root.addHandler(console)
    try:
        progress = StageProgress("sft", total=2, bar=True)
        assert console not in root.handlers  # swapped while the bar is drawn
        logging.warning("step 1 loss=3")
        logging.warning("library chatter")
        progress.step_done(1)
        progress.close()
        assert console in root.handlers  # and back once it closes
    finally:
        root.removeHandler(console)
    err = capsys.readouterr().err
    assert re.search(r"\r +\rLOG step 1 loss=3\n", err)  # the bar cleared, the line, the bar
    assert "chatter" not in err
