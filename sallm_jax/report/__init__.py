"""Plots and a report of one or several runs' work directories.

  python -m sallm_jax.report WORKDIR [WORKDIR ...] [--out DIR] [--preset configs/X.py:PRESET]

writes `<out>/plots/<family>.png` (one per scalar family, runs overlaid) and `<out>/report.md`
(`markdown.report_markdown`); `<out>` defaults to the one work directory. A directory holding runs
below it (`grpo_vs_sft`'s) stands for all of them.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib

from sallm_jax.report import runs as R
from sallm_jax.report.markdown import report_markdown
from sallm_jax.report.plots import Plot, collect_plots, write_plots


@dataclasses.dataclass
class Report:
    """What `write_report` wrote: report.md's path and the plots (with their data)."""

    path: pathlib.Path
    plots: list[Plot]


def write_report(workdirs: list[pathlib.Path], out: pathlib.Path | None = None,
                 preset: str | None = None) -> Report:
    """Write `<out>/plots/*.png` and `<out>/report.md` for the runs in `workdirs` (`out`
    defaults to the one work directory given; with several it must be given)."""
    workdirs = [pathlib.Path(w) for w in workdirs]
    if out is None:
        if len(workdirs) != 1:
            raise ValueError("several work directories: give the report's directory (--out)")
        out = workdirs[0]
    out = pathlib.Path(out)
    runs = R.find_runs(workdirs)
    metrics = {run.label: R.read_metrics(R.stage_dirs(run, R.read_config(run))) for run in runs}
    plots = write_plots(collect_plots(metrics), out / "plots")
    comparison = "\n\n".join((w / "table.md").read_text() for w in workdirs
                             if (w / "table.md").exists())
    title = "Report: " + ", ".join(str(w) for w in workdirs)
    text = report_markdown(title, runs, plots, out, preset=preset, comparison_table=comparison)
    (out / "report.md").write_text(text, encoding="utf-8")
    return Report(out / "report.md", plots)


def write_report_or_warn(workdir: pathlib.Path) -> Report | None:
    """`write_report(workdir)` at a run's end; a failure is a logged warning, not the run's end."""
    try:
        report = write_report([workdir])
    except Exception as error:  # noqa: BLE001 - the run's results are already written
        logging.warning("report: could not write %s/report.md (%s: %s); run `python -m "
                        "sallm_jax.report %s` to retry", workdir, type(error).__name__, error,
                        workdir)
        return None
    logging.info("report: %s, %d plots in %s", report.path, len(report.plots),
                 report.path.parent / "plots")
    return report
