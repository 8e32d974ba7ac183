"""A long field (a 1 MB answer) is cut, with its length shown, wherever the run shows it: the
log, completions.jsonl and TensorBoard's text, skipped.jsonl, and report.md's cells."""

from __future__ import annotations

import json
import logging

from sallm_jax.data.bad_input import SkipLog
from sallm_jax.report.markdown import cell
from sallm_jax.train.metric_writer import MetricWriter

ANSWER = "ab" * 2**19  # 1 MiB of text
# What is shown of it: the first 500 characters, then the length.
SHOWN = "ab" * 250 + "… [1,048,576 characters]"


def test_logged_completions_cut_long_fields(tmp_path, caplog):
    group = {"id": "q1", "question": "Who?", "reference": ANSWER,
             "samples": [{"completion": ANSWER, "reward": 0.5, "rewards": {"bleu": 0.5},
                          "advantage": 0.0, "off_policy": False}]}
    writer = MetricWriter(tmp_path, "grpo")
    with caplog.at_level(logging.INFO):
        writer.write_completions(4, [group])
    writer.close()
    (record,) = [json.loads(x) for x in (tmp_path / "completions.jsonl").read_text().splitlines()]
    (logged,) = record["groups"]
    assert logged["reference"] == SHOWN and logged["samples"][0]["completion"] == SHOWN
    assert logged["question"] == "Who?" and logged["samples"][0]["rewards"] == {"bleu": 0.5}
    assert len(caplog.text) < 2_000 and repr(SHOWN) in caplog.text


def test_a_skip_record_cuts_a_long_detail(tmp_path, caplog):
    log = SkipLog("skip", tmp_path / "skipped.jsonl")
    with caplog.at_level(logging.WARNING):
        log.handle("r0", "m.jsonl:1", "bad manifest line", ANSWER)
    (record,) = [json.loads(x) for x in (tmp_path / "skipped.jsonl").read_text().splitlines()]
    assert record["detail"] == SHOWN
    assert len(caplog.text) < 1_000 and SHOWN in caplog.text


def test_a_report_cell_cuts_a_long_field():
    assert cell(ANSWER) == SHOWN
    assert cell("a | b\nc") == "a \\| b c"
