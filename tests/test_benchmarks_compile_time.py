"""benchmarks/compile_time.py at toy widths: both programs lowered and compiled in both
layouts, the scanned ones smaller, and the table's ratio rows from the records."""

from __future__ import annotations

import dataclasses

import pytest

from benchmarks.compile_time import run, table
from benchmarks.device import SMOKE, smoke_config


@pytest.mark.slow
def test_scanned_programs_are_smaller_than_unrolled_ones():
    config = smoke_config()
    # Six decoder layers: enough for the unrolled programs to repeat a layer's body six times.
    config = dataclasses.replace(config, text=dataclasses.replace(config.text,
                                                                  num_hidden_layers=6))
    records = run(config, SMOKE, lora_rank=2)
    by = {(r["program"], r["layers"]): r for r in records}
    programs = ("rollout", "update's log-prob gradient")
    assert set(by) == {(p, layers) for p in programs for layers in ("unrolled", "scanned")}
    for program in programs:
        unrolled, scanned = by[program, "unrolled"], by[program, "scanned"]
        assert scanned["lines"] < unrolled["lines"]
        assert scanned["compile_s"] > 0 and unrolled["lower_s"] > 0
    text = table(records)
    ratio = by["rollout", "unrolled"]["lines"] / by["rollout", "scanned"]["lines"]
    assert "| rollout | unrolled / scanned |" in text and f"{ratio:.1f}x |" in text
