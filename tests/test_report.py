"""The report of a work directory built here by hand (metrics through the project's own
MetricWriter): PNG plots whose drawn lines equal the scalars written, report.md with the
results and their decoding protocols, logged groups with their advantages, the config's
difference from its preset, timings and skipped inputs; several runs overlaid."""

import json
import logging
import math

import pytest

from sallm_jax.configs.sqa_grpo import get_config
from sallm_jax.data.bad_input import SkipLog
from sallm_jax.report import write_report, write_report_or_warn
from sallm_jax.report.__main__ import main as report_main
from sallm_jax.report.plots import draw
from sallm_jax.report.runs import MISSING, Run, config_diff, logged_groups, read_config
from sallm_jax.train.metric_writer import MetricWriter

SFT_LOSS = [4.5, 3.25, 2.75]
GRPO = {"reward_mean": [0.125, 0.5, 0.625], "reward_std": [0.25, 0.125, 0.0625],
        "kl": [0.0, 0.01, 0.03], "clip_fraction": [0.0, 0.05, 0.1],
        "completion_length": [7.0, 6.5, 5.0]}
# One logged group: rewards [0.5, 0, 1, 0.5]; with grpo.scale_rewards = "group" its advantages
# are (r - 0.5) / (std + 1e-4), std (ddof 1) = sqrt(0.5 / 3).
REWARDS = [0.5, 0.0, 1.0, 0.5]
STD = math.sqrt(0.5 / 3)
ADVANTAGES = [(r - 0.5) / (STD + 1e-4) for r in REWARDS]
TEXTS = ["Ken took it.", "it's\nodd", 'a "quoted" one', ""]


def group_record():
    """One logged group, as `sallm_jax.rl.scoring.completions_table` writes it."""
    return {"id": "train-7", "question": "Who took the cups?", "reference": "Ken took the cups.",
            "samples": [{"completion": t, "reward": r, "rewards": {"bleu": r}, "advantage": a,
                         "off_policy": False}
                        for t, r, a in zip(TEXTS, REWARDS, ADVANTAGES, strict=True)]}


def make_workdir(root, scale=1.0):
    """A finished run's directory of the smoke preset without its base stage, grpo.beta changed;
    training scalars scaled by `scale` (so two runs differ)."""
    cfg = get_config("smoke")
    cfg.stages = ("warmup", "grpo", "eval")
    cfg.grpo.beta, cfg.grpo.scale_rewards = 0.07, "group"
    root.mkdir(parents=True)
    (root / "config.json").write_text(cfg.to_json_best_effort(indent=2))
    sft = MetricWriter(root / "warmup", "warmup")
    for step, loss in enumerate(SFT_LOSS, start=1):
        sft.write(2 * step, {"loss": loss * scale, "grad_norm": 1.0})
    sft.write(6, {"validation_score": 3.5 * scale})
    sft.close()
    grpo = MetricWriter(root / "grpo", "grpo")
    for i in range(3):
        grpo.write(i + 1, {k: v[i] * scale for k, v in GRPO.items()} | {"step_seconds": 2.0})
        # As the GRPO stage logs its groups (grpo.log_completions_every).
        grpo.write_completions(i + 1, [group_record()])
    grpo.close()
    results = {"warmup": {"test": {"bleu": 11.5, "bleu_std": 0.5, "wer": 70.0, "wer_std": 1.0,
                                   "num_examples": 8, "num_samples": 2},
                          "test_greedy": {"bleu": 12.25, "wer": 66.0, "num_examples": 8,
                                          "num_samples": 1}},
               "grpo": {"test": {"bleu": 13.5, "bleu_std": 0.75, "wer": 65.0, "wer_std": 2.0,
                                 "num_examples": 8, "num_samples": 2}}}
    (root / "results.json").write_text(json.dumps(results))
    for stage in ("warmup", "grpo"):
        out = root / "eval" / stage / "test"
        out.mkdir(parents=True)
        (out / "predictions.jsonl").write_text(json.dumps(
            {"id": "test-1", "question": "Who took the cups?", "reference": "Ken took the cups.",
             "prediction": f"{stage} says Ken", "draws": ["a", "b"]}) + "\n")
    skips = SkipLog("skip", root / "skipped.jsonl")
    skips.handle("a", "train.jsonl:3", "empty answer", "the answer is empty")
    skips.handle("b", "train.jsonl:4", "empty answer", "the answer is empty")
    skips.handle("c", "test.jsonl:1", "missing audio", "no such file")
    return root


def drawn(plot):
    """(label, xs, ys) of every line the figure holds."""
    axes = draw(plot).axes[0]
    return [(line.get_label(), list(line.get_xdata()), list(line.get_ydata()))
            for line in axes.get_lines()]


def test_report_plots_equal_the_metrics_and_the_report_holds_every_section(tmp_path):
    workdir = make_workdir(tmp_path / "run")
    report = write_report([workdir])
    plots = {p.name: p for p in report.plots}
    for plot in plots.values():
        assert plot.path.parent == workdir / "plots"
        assert plot.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert drawn(plots["sft_loss"]) == [("warmup", [2, 4, 6], SFT_LOSS)]
    assert drawn(plots["validation_score"]) == [("warmup", [6], [3.5])]
    for key in ("reward_mean", "kl", "clip_fraction", "completion_length"):
        assert drawn(plots[f"grpo_{key}"]) == [("grpo", [1, 2, 3], GRPO[key])], key
    assert plots["grpo_reward_mean"].lines[0].band == GRPO["reward_std"]
    assert "grpo_reward_std" not in plots  # the band of the mean's plot
    assert list(plots)[:6] == ["sft_loss", "grpo_reward_mean", "grpo_kl", "grpo_clip_fraction",
                               "grpo_completion_length", "validation_score"]

    text = report.path.read_text()
    for plot in plots.values():
        assert f"](plots/{plot.name}.png)" in text
    assert ("| warmup | test | sampled, top-p 0.9, T 0.9, 2 draws (mean ± std) | "
            "11.50 ± 0.50 | 70.00 ± 1.00 | 8 |") in text
    assert "| warmup | test_greedy | greedy | 12.25 | 66.00 | 8 |" in text
    for advantage in ADVANTAGES:
        assert f"| {advantage:+.3f} |" in text
    assert f"| 1 | 0.000 | {ADVANTAGES[1]:+.3f} | {TEXTS[1]!r} |" in text
    assert "| grpo (test) | 'grpo says Ken' |" in text
    assert "Against `configs/sqa_grpo.py:smoke`" in text
    assert "| `grpo.beta` | 0.02 | 0.07 |" in text
    assert '| `stages` | ["base", "warmup", "sft", "grpo", "eval"] | ["warmup", "grpo", ' in text
    assert "| empty answer | 2 |" in text and "| missing audio | 1 |" in text
    assert "| grpo |" in text.split("## Timings")[1]


def test_logged_groups_round_trip_and_a_resumed_stage_logs_each_step_once(tmp_path):
    writer = MetricWriter(tmp_path, "grpo")
    for step in (1, 2, 3):
        writer.write_completions(step, [group_record(), {**group_record(), "id": "other"}])
    writer.close()
    writer = MetricWriter(tmp_path, "grpo", resume_step=2)  # resumed after step 2
    writer.write_completions(3, [{**group_record(), "reference": "again"}])
    writer.close()
    groups = logged_groups(tmp_path)
    assert [g.step for g in groups] == [1, 2, 3]
    assert groups[0].id == "train-7" and groups[-1].reference == "again"
    assert [s["completion"] for s in groups[0].samples] == TEXTS
    assert [s["advantage"] for s in groups[0].samples] == ADVANTAGES


def test_several_runs_overlay_and_need_an_output_directory(tmp_path, capsys):
    first, second = make_workdir(tmp_path / "a"), make_workdir(tmp_path / "b", scale=2.0)
    with pytest.raises(SystemExit):
        report_main([str(first), str(second)])
    report_main([str(first), str(second), "--out", str(tmp_path / "both")])
    assert "report.md" in capsys.readouterr().out
    out = tmp_path / "both"
    assert (out / "report.md").exists() and (out / "plots" / "sft_loss.png").exists()
    report = write_report([first, second], out)
    loss = {p.name: p for p in report.plots}["sft_loss"]
    assert drawn(loss) == [(f"{first}: warmup", [2, 4, 6], SFT_LOSS),
                           (f"{second}: warmup", [2, 4, 6], [2 * x for x in SFT_LOSS])]


def test_a_directory_of_runs_is_read_as_each_run(tmp_path):
    """grpo_vs_sft's layout: <root>/<arm>/lr<rate>-seed<k>/, each a run."""
    root = tmp_path / "gvs"
    make_workdir(root / "grpo" / "lr0.0004-seed0")
    make_workdir(root / "grpo" / "lr0.0002-seed0", scale=0.5)
    (root / "table.md").write_text("| policy | evaluation |\n|---|---|\n| + GRPO | test |\n")
    report = write_report([root])
    reward = {p.name: p for p in report.plots}["grpo_reward_mean"]
    assert [line.label for line in reward.lines] == ["grpo/lr0.0002-seed0: grpo",
                                                     "grpo/lr0.0004-seed0: grpo"]
    assert reward.lines[0].values == [0.5 * v for v in GRPO["reward_mean"]]
    assert "| + GRPO | test |" in (root / "report.md").read_text()


def test_a_failing_report_is_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert write_report_or_warn(tmp_path / "missing") is None
    assert "could not write" in caplog.text and "sallm_jax.report" in caplog.text


def test_config_diff_names_changed_and_absent_keys():
    run = {"grpo": {"beta": 0.07, "steps": 3}, "stages": ["grpo", "eval"], "old_key": 1}
    preset = {"grpo": {"beta": 0.02, "steps": 3, "new_key": 0.5}, "stages": ["grpo", "eval"]}
    assert config_diff(run, preset) == {"old_key": (MISSING, 1), "grpo.beta": (0.02, 0.07),
                                        "grpo.new_key": (0.5, MISSING)}


def test_an_older_run_s_rl_section_reads_as_grpo(tmp_path):
    """A run written before the section took its stage's name still reads (and diffs against
    today's presets) under the new name."""
    (tmp_path / "config.json").write_text(json.dumps({"rl": {"beta": 0.07}, "seed": 0}))
    assert read_config(Run("old", tmp_path)) == {"grpo": {"beta": 0.07}, "seed": 0}
