"""Each experiment config's smoke preset finishes end to end: rc 0, a results.json with every
evaluated stage under the task's evaluation protocols and metrics, and the printed table with the
task's metric columns. (configs/sqa_grpo.py:smoke runs in test_main.)

The runs share the session's `smoke_cache`, so the embedded data, the smoke base model and the
compiled programs are built once (per pytest-xdist worker).
"""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPEN_FORMAT = ("bleu", "chrf", "rouge_l", "meteor", "wer")  # text_metrics' tabled columns

# config -> (stages evaluated, evaluations per stage, metrics each must hold, table columns).
# The multiple-choice task decodes greedily only (one answer per question): "test" alone, and
# its metrics are MMAU accuracy, overall and for the embedded set's one category ("speech").
# Each preset runs as shipped, since what is tested is that the preset itself finishes. Should
# CI time matter more: ast_grpo's and aqa_grpo's "sft" arm could go
# (--config.stages=('base','warmup','grpo','eval')) with little lost, as their warm-up already
# runs the same SFT code on the task's targets; sqa_sft has no stage to spare.
EXPECTED = {
    "sqa_sft": (("base", "warmup", "sft"), ("test", "test_greedy"),
                (*OPEN_FORMAT, "rouge1", "rouge2"), OPEN_FORMAT),
    "ast_grpo": (("base", "warmup", "sft", "grpo"), ("test", "test_greedy"),
                 (*OPEN_FORMAT, "rouge1", "rouge2"), OPEN_FORMAT),
    "aqa_grpo": (("base", "warmup", "sft", "grpo"), ("test",),
                 ("accuracy", "accuracy/speech"), ("accuracy",)),
}
NUM_TEST = 8  # configs/base.py apply_smoke: data.num_test
NUM_DRAWS = 2  # apply_smoke: eval.num_samples of a sampled protocol


@pytest.mark.parametrize("name", list(EXPECTED))
def test_smoke_preset_finishes_with_the_tasks_results(name, tmp_path, smoke_cache):
    stages, evaluations, metric_names, columns = EXPECTED[name]
    workdir = tmp_path / "run"
    env = {**os.environ, "SALLM_JAX_CACHE": str(smoke_cache), "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-m", "sallm_jax.main",
                          f"--config=configs/{name}.py:smoke", f"--workdir={workdir}"],
                         env=env, capture_output=True, text=True, timeout=1800, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]

    results = json.loads((workdir / "results.json").read_text())
    assert list(results) == list(stages)
    for stage, by_evaluation in results.items():
        assert list(by_evaluation) == list(evaluations), stage
        for evaluation, metrics in by_evaluation.items():
            where = (stage, evaluation)
            assert set(metric_names) <= set(metrics), (where, sorted(metrics))
            other_task = {"bleu", "accuracy"} - set(metric_names)
            assert not other_task & set(metrics), (where, sorted(metrics))
            assert metrics["num_examples"] == NUM_TEST and metrics["num_skipped"] == 0, where
            sampled = evaluation == "test" and name != "aqa_grpo"
            assert metrics["num_samples"] == (NUM_DRAWS if sampled else 1), where
            stds = {m for m in metrics if m.endswith("_std")}
            if sampled:  # mean and std over the draws
                assert {f"{m}_std" for m in metric_names} <= stds, where
            else:
                assert not stds, where
            for m in metric_names:
                assert 0.0 <= metrics[m] <= (100.0 if m != "wer" else 1e4), (where, m)
            if name == "aqa_grpo":  # 8 questions: a multiple of 12.5 percent
                assert metrics["accuracy"] * NUM_TEST / 100 == pytest.approx(
                    round(metrics["accuracy"] * NUM_TEST / 100)), where
            predictions = workdir / "eval" / stage / evaluation / "predictions.jsonl"
            assert len(predictions.read_text().splitlines()) == NUM_TEST, where

    # The printed table (stdout; the logs go to stderr): the task's columns, one row per
    # (stage, evaluation), each cell the results' value to two decimals.
    lines = out.stdout.splitlines()
    starts = [i for i, line in enumerate(lines) if line.split()[:2] == ["stage", "evaluation"]]
    assert len(starts) == 1, out.stdout
    expected_rows = [(stage, evaluation) for stage in stages for evaluation in evaluations]
    header, rows = lines[starts[0]], lines[starts[0] + 1:starts[0] + 1 + len(expected_rows)]
    assert header.split() == ["stage", "evaluation", *columns], out.stdout
    assert [tuple(row.split()[:2]) for row in rows] == expected_rows, out.stdout
    for row, (stage, evaluation) in zip(rows, expected_rows, strict=True):
        cells = row.split()[2:]
        values = [c for c in cells if c != "±"]
        metrics = results[stage][evaluation]
        means = values[::2] if metrics["num_samples"] > 1 else values
        assert means == [f"{metrics[c]:.2f}" for c in columns], (row, metrics)
