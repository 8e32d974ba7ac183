"""The `eval` stage: every finished stage's parameters scored on each of eval.splits under each
protocol; its section's defaults (also the protocol of validation scoring) and checks."""

from __future__ import annotations

import ml_collections

from sallm_jax.runtime.user_errors import require
from sallm_jax.stages.checks import positive_ints

Results = dict[str, dict[str, dict[str, float]]]  # stage -> evaluation -> metric -> value


def eval_section() -> ml_collections.ConfigDict:
    """The evaluation's splits, batch, answer length and sampling protocol."""
    return ml_collections.ConfigDict({
        "splits": ("test",), "batch_size": 50, "max_new_tokens": 16,
        # The papers' protocol for open-format answers: top-p 0.9, temperature 0.9, with
        # num_samples draws per question scored as whole evaluations (mean and std over
        # draws). temperature 0 is greedy decoding (num_samples 1). Validation scoring for
        # model selection uses the same protocol.
        "temperature": 0.9, "top_p": 0.9, "top_k": 0, "num_samples": 4,
        "greedy": True,  # also decode greedily, reported under "<split>_greedy"
    })


def check_eval(cfg: ml_collections.ConfigDict, name: str) -> None:
    """The keys of evaluation section `cfg[name]`."""
    section = cfg[name]
    positive_ints(section, name, ("batch_size", "max_new_tokens", "num_samples"))
    require(section.temperature > 0 or section.num_samples == 1, f"{name}.num_samples",
            f"1 with greedy decoding ({name}.temperature 0)", section.num_samples)
    require(section.temperature >= 0, f"{name}.temperature", "a value >= 0 (0 is greedy)",
            section.temperature)
    require(bool(section.splits), f"{name}.splits", "at least one split", section.splits)


def evaluate_trained(experiment) -> Results:
    """Every finished stage's parameters on each of eval.splits under each protocol."""
    results: Results = {}
    for name, params in experiment.trained.items():
        for split in experiment.cfg.eval.splits:
            for suffix in experiment.protocols:
                key = split + suffix
                results.setdefault(name, {})[key] = experiment.evaluate(
                    params, experiment.splits[split], suffix,
                    out_dir=experiment.workdir / "eval" / name / key, name=f"eval {name}/{key}")
    return results
