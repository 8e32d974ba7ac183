"""report.md: the results table with its decoding protocols, the plots, logged GRPO groups with
their rewards and advantages, test answers beside their references, the config against its
preset, stage timings and skipped inputs."""

from __future__ import annotations

import json
import os
import pathlib

from sallm_jax.metrics.names import METRICS
from sallm_jax.report import runs as R
from sallm_jax.report.plots import Plot
from sallm_jax.runtime.long_text import shorten

# Columns of the results table, in this order when present; other metrics follow by name.
COUNTS = ("num_examples", "num_skipped", "num_samples")


def cell(text: object) -> str:
    """A table cell: one line, pipes escaped, a long text cut (`long_text.shorten`)."""
    return shorten(str(text)).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list[object]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(cell(c) for c in row) + " |" for row in rows)]


def protocol(config: dict, evaluation: str, metrics: dict) -> str:
    """How an evaluation decoded: greedy, or the sampling settings and the draws scored."""
    e = config.get("eval", {})
    if evaluation.endswith("_greedy") or e.get("temperature", 1.0) == 0:
        return "greedy"
    parts = [f"T {e['temperature']:g}"] if "temperature" in e else []
    if e.get("top_p", 1.0) < 1.0:
        parts.insert(0, f"top-p {e['top_p']:g}")
    if e.get("top_k"):
        parts.insert(0, f"top-k {e['top_k']}")
    draws = int(metrics.get("num_samples", e.get("num_samples", 1)))
    return "sampled, " + ", ".join(parts) + f", {draws} draw{'s' * (draws > 1)} (mean ± std)"


def metric_names(results: dict) -> list[str]:
    present = {k for by_eval in results.values() for m in by_eval.values() for k in m
               if not k.endswith("_std") and k not in COUNTS}
    return [m for m in METRICS if m in present] + sorted(present - set(METRICS))


def results_section(runs: list[tuple[R.Run, dict, dict]]) -> list[str]:
    """One table over every run: stage, evaluation, decoding, each metric (mean ± std over a
    sampled evaluation's draws), questions scored."""
    names = metric_names({f"{r.label}/{s}": e for r, _, res in runs for s, e in res.items()})
    rows = []
    for run, config, results in runs:
        for stage, by_eval in results.items():
            for evaluation, metrics in by_eval.items():
                values = [f"{metrics[n]:.2f}" + (f" ± {metrics[n + '_std']:.2f}"
                                                 if n + "_std" in metrics else "")
                          if n in metrics else "-" for n in names]
                rows.append(([run.label] if len(runs) > 1 else []) + [
                    stage, evaluation, protocol(config, evaluation, metrics), *values,
                    int(metrics.get("num_examples", 0))])
    if not rows:
        return ["No results.json yet (the run has not reached its evaluation).", ""]
    header = (["run"] if len(runs) > 1 else []) + ["stage", "evaluation", "decoding", *names,
                                                   "questions"]
    return [*table(header, rows), ""]


def base_section(config: dict) -> list[str]:
    record = R.read_base_record(config)
    scores = record.get("heldout_asr", {})
    if not scores:
        return []
    shown = ", ".join(f"{k} {v:.2f}" for k, v in scores.items() if k in ("wer", "cer"))
    return [f"Base model (cached): held-out transcription {shown} "
            f"({int(scores.get('num_examples', 0))} clips, greedy).", ""]


def plots_section(plots: list[Plot], report_dir: pathlib.Path) -> list[str]:
    lines = []
    for plot in plots:
        relative = pathlib.Path(os.path.relpath(plot.path, report_dir)).as_posix()
        lines += [f"![{plot.title}]({relative})", ""]
    return lines or ["No training scalars found (no `<stage>/metrics.jsonl`).", ""]


def groups_section(run: R.Run, stage_dir: pathlib.Path | None,
                   max_groups: int = 3) -> list[str]:
    """Up to `max_groups` logged GRPO groups, spread from the first to the last, each sample's
    reward and the advantage the update weighted it by."""
    groups = R.logged_groups(stage_dir) if stage_dir is not None else []
    if not groups:
        return []
    # Spread over the stage: the first and the last, and evenly between.
    last = len(groups) - 1
    picked = groups if len(groups) <= max_groups else [
        groups[i] for i in sorted({round(k * last / max(max_groups - 1, 1))
                                   for k in range(max_groups)} if max_groups > 1 else {last})]
    lines = ["From `grpo/completions.jsonl`; a ground-truth row of mixed-policy GRPO is "
             "marked (ground truth).", ""]
    for group in picked:
        rows = [[i, f"{s['reward']:.3f}", f"{s['advantage']:+.3f}",
                 repr(s["completion"]) + (" (ground truth)" if s["off_policy"] else "")]
                for i, s in enumerate(group.samples)]
        lines += [f"**{run.label}, step {group.step}**, {cell(group.id)}: "
                  f"{cell(repr(group.question))}, reference: {cell(repr(group.reference))}", "",
                  *table(["sample", "reward", "advantage", "completion"], rows), ""]
    return lines


def answers_section(run: R.Run, results: dict, num_questions: int = 3) -> list[str]:
    """The first test questions: reference and each stage's first answer."""
    answers = {}
    for stage, by_eval in results.items():
        for evaluation in by_eval:
            if not evaluation.startswith("test"):
                continue
            for p in R.read_predictions(run, stage, evaluation)[:num_questions]:
                answers.setdefault(p["id"], {"question": p.get("question", ""),
                                             "reference": p.get("reference", "")})
                answers[p["id"]][f"{stage} ({evaluation})"] = p.get("prediction", "")
    lines = []
    for example_id, entry in answers.items():
        lines += [f"**{cell(example_id)}**: {cell(entry.pop('question'))}", "",
                  *table(["", "answer"], [[k, repr(v)] for k, v in entry.items()]), ""]
    return lines


def config_section(config: dict, preset: str | None) -> list[str]:
    if not config:
        return ["No config.json.", ""]
    if preset:
        spec, diff = preset, R.config_diff(config, R.preset_config(preset))
    else:
        found = R.closest_preset(config)
        if found is None:
            return ["The presets in `configs/` could not be imported (give "
                    "`--preset`).", ""]
        spec, diff = found
    title = (f"Against `{spec}`" if preset else
             f"Against `{spec}`, the preset closest to it (give `--preset` to name another)")
    if not diff:
        return [title + ": no difference.", ""]
    rows = [[f"`{k}`", *(v if v is R.MISSING else json.dumps(v) for v in pair)]
            for k, pair in diff.items()]
    return [title + ":", "", *table(["key", "preset", "this run"], rows), ""]


def timing_section(timings: dict[str, R.StageTiming]) -> list[str]:
    if not timings:
        return []
    rows = [[stage, f"{t.seconds:.1f}",
             "-" if t.mean_step_seconds is None else f"{t.mean_step_seconds:.2f}",
             "-" if t.mean_tokens_per_s is None else f"{t.mean_tokens_per_s:.1f}"]
            for stage, t in timings.items()]
    return ["From the stages' TensorBoard records: seconds from the stage's start to its last "
            "logged step (a resumed stage's pauses included); step time and tokens/s are the "
            "logged steps' means, each start's compiling first step left out.", "",
            *table(["stage", "seconds", "s / logged step", "tokens/s"], rows), ""]


def skipped_section(counts: dict[str, int]) -> list[str]:
    if not counts:
        return ["No input was skipped (`skipped.jsonl` is absent or empty).", ""]
    rows = [[reason, n] for reason, n in sorted(counts.items())]
    return [f"{sum(counts.values())} examples left out (each listed in `skipped.jsonl`):", "",
            *table(["reason", "examples"], rows), ""]


def report_markdown(title: str, runs: list[R.Run], plots: list[Plot],
                    report_dir: pathlib.Path, preset: str | None = None,
                    comparison_table: str = "") -> str:
    """The whole report.md text for `runs`, plots linked relative to `report_dir`."""
    read = [(run, R.read_config(run), R.read_results(run)) for run in runs]
    lines = [f"# {title}", ""]
    if len(runs) > 1:
        lines += ["Runs: " + ", ".join(f"`{r.label}`" for r in runs), ""]
    if comparison_table:
        lines += ["## Comparison over seeds (table.md)", "", comparison_table.strip(), ""]
    lines += ["## Results", "", *results_section(read)]
    for _, config, _ in read[:1]:
        lines += base_section(config)
    lines += ["## Training curves", "", *plots_section(plots, report_dir)]
    for run, config, results in read:
        heading = f" ({run.label})" if len(runs) > 1 else ""
        dirs = R.stage_dirs(run, config)
        metrics = R.read_metrics(dirs)
        timings = {s: t for s, d in dirs.items()
                   if (t := R.stage_timing(d, metrics[s])) is not None}
        groups = groups_section(run, dirs.get("grpo"))
        if groups:
            lines += [f"## GRPO sample groups{heading}", "", *groups]
        answers = answers_section(run, results)
        if answers:
            lines += [f"## Test answers{heading}", "", *answers]
        lines += [f"## Config{heading}", "", *config_section(config, preset)]
        if timings:
            lines += [f"## Timings{heading}", "", *timing_section(timings)]
        lines += [f"## Skipped inputs{heading}", "", *skipped_section(R.skipped_counts(run))]
    return "\n".join(lines).rstrip() + "\n"
