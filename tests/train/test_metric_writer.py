"""A resumed stage's metrics.jsonl holds each step once: records past the restored step (and a
line cut short by a kill) are dropped before the replayed steps are written again."""

from __future__ import annotations

import json

from sallm_jax.train.metric_writer import MetricWriter


def test_resume_truncates_replayed_steps(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"stage": "sft", "step": s, "loss": 1.0 / s}) for s in range(1, 7)]
    path.write_text("\n".join(lines) + '\n{"stage": "sft", "st')  # killed mid-line
    writer = MetricWriter(tmp_path, "sft", resume_step=4)
    writer.write(5, {"loss": 0.5})
    writer.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert records[3]["loss"] == 0.25 and records[4]["loss"] == 0.5


def test_fresh_stage_starts_an_empty_record(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"stage": "sft", "step": 3}) + "\n")
    MetricWriter(tmp_path, "sft").close()  # resume_step 0: nothing of a previous try is kept
    assert (tmp_path / "metrics.jsonl").read_text() == ""
