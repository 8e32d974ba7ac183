"""Training curves as PNG files, one per scalar family, every run and stage that logged it overlaid;
drawn on matplotlib's Agg canvas (never pyplot's global backend), so headless or in a notebook."""

from __future__ import annotations

import dataclasses
import pathlib
import re

from sallm_jax.report.runs import series

# Family name -> (title, y label). Families not listed take their scalar's name.
KNOWN = {
    "sft_loss": ("SFT loss (base, warm start, SFT)", "cross-entropy"),
    "grpo_reward_mean": ("GRPO reward: mean, shaded ± std over the batch's samples", "reward"),
    "grpo_kl": ("GRPO KL to the reference (k3)", "KL"),
    "grpo_clip_fraction": ("GRPO clipped fraction of tokens", "fraction"),
    "grpo_completion_length": ("GRPO completion length", "tokens"),
    "validation_score": ("validation score (what the best checkpoint is chosen on)", "score"),
    "grpo_loss": ("GRPO loss", "loss"),
    "grpo_frac_reward_zero_std": ("GRPO groups whose rewards are all equal", "fraction"),
}
# Drawn as the band around another family's line, not as a plot of its own.
BANDS = {"grpo_reward_std": "grpo_reward_mean"}
SKIPPED_KEYS = ("stage", "step")


@dataclasses.dataclass
class Line:
    label: str
    steps: list[int]
    values: list[float]
    band: list[float] | None = None  # ± this around each value


@dataclasses.dataclass
class Plot:
    """One family's curves; `path` is the PNG once written."""

    name: str
    title: str
    ylabel: str
    lines: list[Line]
    path: pathlib.Path | None = None


def family(stage: str, key: str) -> str:
    """The plot a stage's scalar goes to: validation scores together, GRPO's scalars apart from
    the SFT-like stages' (base, warmup, sft), which share each of theirs."""
    if key == "validation_score":
        return key
    kind = "grpo" if stage == "grpo" else "sft"
    return f"{kind}_{re.sub(r'[^A-Za-z0-9_]+', '_', key)}"


def collect_plots(metrics: dict[str, dict[str, list[dict]]]) -> list[Plot]:
    """Plots of every scalar in `metrics` (run label -> stage -> metrics.jsonl records), KNOWN
    families first; a line is labelled by its stage, prefixed by its run when there are several."""
    lines: dict[str, list[Line]] = {}
    several = len(metrics) > 1
    for run, by_stage in metrics.items():
        for stage, records in by_stage.items():
            keys = dict.fromkeys(k for r in records for k in r if k not in SKIPPED_KEYS)
            for key in keys:
                name = family(stage, key)
                if name in BANDS:
                    continue
                steps, values = series(records, key)
                band = None
                band_key = next((k for k, v in BANDS.items() if v == name), None)
                if band_key is not None:
                    band_steps, band = series(records, band_key.removeprefix("grpo_"))
                    band = band if band_steps == steps else None
                label = f"{run}: {stage}" if several else stage
                lines.setdefault(name, []).append(Line(label, steps, values, band))
    order = [n for n in KNOWN if n in lines] + sorted(n for n in lines if n not in KNOWN)
    return [Plot(n, *KNOWN.get(n, (n.replace("_", " ", 1), n.split("_", 1)[-1])), lines[n])
            for n in order]


def draw(plot: Plot):
    """A matplotlib Figure of the plot (Agg canvas): one line per Line, its band shaded."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(6.4, 3.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for line in plot.lines:
        drawn = axes.plot(line.steps, line.values, marker="o" if len(line.steps) < 30 else None,
                          markersize=3, label=line.label)[0]
        if line.band is not None:
            low = [v - b for v, b in zip(line.values, line.band, strict=True)]
            high = [v + b for v, b in zip(line.values, line.band, strict=True)]
            axes.fill_between(line.steps, low, high, color=drawn.get_color(), alpha=0.2)
    axes.set_title(plot.title, fontsize=10)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("step")
    axes.set_ylabel(plot.ylabel)
    axes.grid(alpha=0.3)
    if len(plot.lines) > 1:
        axes.legend(fontsize=7)
    figure.tight_layout()
    return figure


def write_plots(plots: list[Plot], out_dir: pathlib.Path) -> list[Plot]:
    """Write each plot to `out_dir/<name>.png`; the plots with their paths set."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for plot in plots:
        plot.path = out_dir / f"{plot.name}.png"
        draw(plot).savefig(plot.path)
    return plots
