"""The papers' GRPO-vs-SFT comparison: every arm starts from the same base model with the same
training split and example budget; its learning rate is chosen on the validation split (seed 0, its
configured rate x each of --lr_factors), then run on the other --seeds.

  python -m sallm_jax.commands.grpo_vs_sft --config=configs/sqa_grpo.py --seeds=0,1,2 \\
      --workdir=runs/gvs_sqa

Arms (stages `base` and `warmup` run once, in <workdir>/start):
  sft          the SFT warm start, then more SFT (sft.steps x sft.batch_size examples)
  grpo         the SFT warm start, then GRPO (grpo.steps x grpo.batch_size prompts)
  mp_grpo      the same with mixed-policy GRPO (one reference answer in each group)
  grpo_base    GRPO from the base, as many prompts as the others' examples; only if in --arms

Work directory: start/, <arm>/lr<rate>-seed<k>/ (a finished run is read from its results.json: a
rerun runs only what is new), table.md (mean +- population std over seeds) and table.json.
"""

from __future__ import annotations

import copy
import json
import pathlib

import numpy as np
from absl import app, flags, logging

from sallm_jax.metrics.names import HIGHER_IS_BETTER
from sallm_jax.run.config_file import define_config_flag
from sallm_jax.run.experiment import run_experiment
from sallm_jax.runtime.record_files import read_json
from sallm_jax.runtime.user_errors import run_command
from sallm_jax.train.base import base_directory, default_cache_dir

_CONFIG = define_config_flag("config", "Experiment config file: configs/<name>.py[:preset] or "
                             "<name>[:preset] (the shipped configs), or a path.",
                             lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the runs and the table go.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of the arms' runs.")
_ARMS = flags.DEFINE_list("arms", ["sft", "grpo", "mp_grpo"], "Arms to run (see the module "
                          "docstring): sft, grpo, mp_grpo, grpo_base.")
_LR_FACTORS = flags.DEFINE_list("lr_factors", ["0.5", "1", "2"],
                                "Multiples of each arm's configured learning rate to try.")

ARMS = {"sft": "+ SFT", "grpo": "+ GRPO", "mp_grpo": "+ MP-GRPO", "grpo_base": "GRPO from base"}


def arm_stage(arm: str) -> str:
    """The training stage an arm runs: sft for the SFT arm, grpo for every GRPO arm."""
    return "sft" if arm == "sft" else "grpo"


def arm_config(base, arm: str, seed: int, learning_rate: float, start_dir: pathlib.Path):
    """The run of `arm` with `seed` and `learning_rate`, from the start run's parameters."""
    cfg = copy.deepcopy(base)
    cfg.seed = seed
    cfg.tokenizer.path = str(base_directory(base, default_cache_dir()) / "tokenizer")
    cfg.init_params = str(base_directory(base, default_cache_dir()) / "params"
                          if arm == "grpo_base" else start_dir / "warmup" / "params")
    cfg.stages = (arm_stage(arm), "eval")
    section = cfg[arm_stage(arm)]  # a stage's section carries its name
    section.start, section.learning_rate = "", learning_rate
    cfg.grpo.num_off_policy = 1 if arm == "mp_grpo" else 0
    if arm == "grpo_base":  # the warm start's examples become GRPO prompts too
        warm_examples = base.warmup.steps * base.warmup.batch_size
        cfg.grpo.steps += warm_examples // cfg.grpo.batch_size
    return cfg


def arm_learning_rate(base, arm: str) -> float:
    return base[arm_stage(arm)].learning_rate


def validation_score(workdir: pathlib.Path, arm: str) -> float:
    """The best validation score the run kept (what it selected its parameters on)."""
    return json.loads((workdir / arm_stage(arm) / "best.json").read_text())["score"]


def finished_or_run(cfg, workdir: pathlib.Path) -> dict:
    """The results of a finished run (its results.json), or of running it now (resuming)."""
    results = read_json(workdir / "results.json")  # None when absent or cut short
    return results if isinstance(results, dict) else run_experiment(cfg, workdir)


def summarise(results: dict[str, list[dict]]) -> tuple[str, dict]:
    """Markdown table and JSON of mean / std over runs, per arm, evaluation and metric."""
    summary: dict = {}
    evaluations = sorted({k for runs in results.values() for r in runs for k in r})
    names = [m for m in HIGHER_IS_BETTER
             if any(m in r[e] for runs in results.values() for r in runs for e in r)]
    lines = ["| policy | evaluation | runs | " + " | ".join(names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    for evaluation in evaluations:
        for arm, runs in results.items():
            scored = [r[evaluation] for r in runs if evaluation in r]
            if not scored:
                continue
            stats = {m: (float(np.mean([r[m] for r in scored])),
                         float(np.std([r[m] for r in scored]))) for m in names}
            summary.setdefault(arm, {})[evaluation] = {
                "runs": len(scored), **{m: {"mean": a, "std": b} for m, (a, b) in stats.items()}}
            cells = [f"{a:.2f} ± {b:.2f}" if len(scored) > 1 else f"{a:.2f}"
                     for a, b in stats.values()]
            lines.append(f"| {arm} | {evaluation} | {len(scored)} | " + " | ".join(cells) + " |")
    return "\n".join(lines), summary


def compare(base_config, workdir: pathlib.Path, seeds: list[int], arms: list[str],
            lr_factors: list[float]) -> str:
    """The start, each arm's rate search on `seeds[0]`, then the other seeds; the markdown table."""
    start = copy.deepcopy(base_config)
    start.stages = ("base", "warmup", "eval")
    start_dir = workdir / "start"
    start_results = finished_or_run(start, start_dir)
    results: dict[str, list[dict]] = {"base": [start_results["base"]],
                                      "SFT warm start": [start_results["warmup"]]}
    search: dict[str, dict[str, float]] = {}
    for arm in arms:
        stage = arm_stage(arm)

        def run(seed: int, rate: float, arm=arm, stage=stage):
            logging.info("[grpo_vs_sft] %s, learning rate %g, seed %d", arm, rate, seed)
            out = workdir / arm / f"lr{rate:g}-seed{seed}"
            return out, finished_or_run(arm_config(base_config, arm, seed, rate, start_dir),
                                        out)[stage]

        rates = [arm_learning_rate(base_config, arm) * f for f in lr_factors]
        tried = {rate: run(seeds[0], rate) for rate in rates}
        scores = {rate: validation_score(out, arm) for rate, (out, _) in tried.items()}
        chosen = max(scores, key=scores.get)
        search[arm] = {"validation_scores": {f"{r:g}": s for r, s in scores.items()},
                       "chosen_learning_rate": chosen}
        results[ARMS[arm]] = [tried[chosen][1]] + [run(seed, chosen)[1] for seed in seeds[1:]]
    table, summary = summarise(results)
    (workdir / "table.md").write_text(table + "\n")
    (workdir / "table.json").write_text(json.dumps({"arms": summary, "search": search},
                                                   indent=2))
    return table


def main(argv: list[str]) -> None:
    del argv
    workdir = pathlib.Path(_WORKDIR.value or "runs/grpo_vs_sft")
    unknown = [a for a in _ARMS.value if a not in ARMS]
    if unknown:
        raise app.UsageError(f"--arms: unknown {unknown}; expected some of {list(ARMS)}")
    print(compare(_CONFIG.value, workdir, [int(s) for s in _SEEDS.value], list(_ARMS.value),
                  [float(f) for f in _LR_FACTORS.value]), flush=True)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    run_command(main)
