"""The stages a config's `stages` can list, each registered once with its config section and
its runner. `run_experiment` walks the configured ones through `STAGES`; config validation and
the start-up summary read their names and sections from here.

A training stage's runner takes (experiment, stage name, starting parameters) and returns the
trained parameters; the evaluation stage's (section None) takes the experiment and returns its
results. The experiment is `sallm_jax.experiment.Experiment`: the model split, chat format, data,
mesh, evaluation protocols and the parameters of each finished stage.

Adding a stage (pretraining, say): a runner that calls a `train.loop.TrainingLoop` with its own
`StageSteps`, one `register_stage` line, its config section in `configs/base.py` and its checks
in `validate.py`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from flax import nnx

from sallm_jax.eval.evaluate import evaluate
from sallm_jax.rl.rollout import SamplingConfig
from sallm_jax.train.base import finish_base, is_built, unmark_built
from sallm_jax.train.grpo_stage import run_grpo
from sallm_jax.train.health import HealthCheck
from sallm_jax.train.params_io import restore_or_set_aside, save_params
from sallm_jax.train.sft import run_sft
from sallm_jax.train.wandb_mirror import wandb_settings

Results = dict[str, dict[str, dict[str, float]]]  # stage -> evaluation -> metric -> value


@dataclasses.dataclass(frozen=True)
class Stage:
    """One entry of `stages`: the config section a training stage reads (None: the evaluation
    stage) and its runner."""

    section: str | None
    run: Callable


STAGES: dict[str, Stage] = {}


def register_stage(name: str, section: str | None, run: Callable) -> None:
    STAGES[name] = Stage(section, run)


def training_stages() -> dict[str, str]:
    """Training stage -> its config section."""
    return {name: s.section for name, s in STAGES.items() if s.section is not None}


def kept_in_workdir(train: Callable) -> Callable:
    """A runner whose trained parameters are saved in <workdir>/<stage>/params, and loaded from
    there instead of training again once they exist; when they cannot be read, the stage runs
    again (resuming from its last checkpoint) and saves them anew."""

    def run(experiment, name: str, start: nnx.State) -> nnx.State:
        directory = experiment.workdir / name / "params"
        if directory.exists():
            logging.info("[%s] already finished; loading its parameters", name)
            params = restore_or_set_aside(directory, start, experiment.partitioner,
                                          f"[{name}] the final parameters")
            if params is not None:
                return params
        params = train(experiment, name, start)
        save_params(directory, params)
        return params

    return run


def stage_inputs(experiment, name: str, section: str, max_target_tokens: int) -> dict:
    """What every training stage on the task's training split is given."""
    cfg = experiment.cfg
    every = cfg[section].eval_every
    return dict(graphdef=experiment.graphdef, frozen=experiment.frozen,
                rows=experiment.splits["train"], chat=experiment.chat,
                spec=experiment.spec(section, max_target_tokens),
                workdir=experiment.workdir / name, seed=cfg.seed,
                partitioner=experiment.partitioner, skip_log=experiment.skip_log,
                validate=experiment.validator(cfg.rl.select_on) if every else None,
                num_workers=cfg.data.num_workers, health=HealthCheck.from_config(cfg.train, name),
                wandb=wandb_settings(cfg, experiment.workdir))


@kept_in_workdir
def train_supervised(experiment, name: str, start: nnx.State) -> nnx.State:
    section = experiment.cfg[name]
    return run_sft(section, params=start, name=name,
                   **stage_inputs(experiment, name, name, section.max_target_tokens))


@kept_in_workdir
def train_grpo(experiment, name: str, start: nnx.State) -> nnx.State:
    cfg = experiment.cfg
    # LoRA on a frozen base: the reference is the policy with adapters off, no copy.
    lora_reference = bool(cfg.lora.rank) and cfg.lora.trainable == "adapters"
    return run_grpo(cfg.rl, params=start, ref_params=None if lora_reference else start,
                    **stage_inputs(experiment, name, "rl", cfg.rl.max_completion_length))


def train_base(experiment, name: str, start: nnx.State) -> nnx.State:
    """The base model, from its cache when it is built (the cache key names its settings):
    supervised on the ASR corpus, then scored greedily on the corpus's held-out split. A cache
    whose parameters or base.json cannot be read is built again (resuming from its checkpoints),
    never loaded in part."""
    cfg, directory = experiment.cfg, experiment.base_dir
    if is_built(directory):
        logging.info("[base] loading the cached base model from %s", directory)
        params = restore_or_set_aside(directory / "params", start, experiment.partitioner,
                                      "[base] the cached base model's parameters")
        if params is not None:
            return params
        unmark_built(directory)
    spec = experiment.spec("base", cfg.base.max_target_tokens)
    params = run_sft(cfg.base, graphdef=experiment.graphdef, params=start,
                     frozen=experiment.frozen, rows=experiment.corpus["train"],
                     chat=experiment.chat, spec=spec, workdir=directory / "train",
                     seed=cfg.base.seed, partitioner=experiment.partitioner,
                     skip_log=experiment.skip_log, num_workers=cfg.data.num_workers,
                     name="base", health=HealthCheck.from_config(cfg.train, "base"),
                     wandb=wandb_settings(cfg, experiment.workdir))
    greedy = SamplingConfig(max_new_tokens=cfg.base.max_target_tokens, temperature=0.0)
    heldout = evaluate(experiment.graphdef, params, experiment.frozen,
                       experiment.corpus["validation"], experiment.chat, spec, greedy,
                       partitioner=experiment.partitioner, out_dir=directory / "heldout",
                       skip_log=experiment.skip_log, name="base heldout")
    finish_base(directory, cfg, params, save_params, heldout)
    return params


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


register_stage("base", "base", train_base)
register_stage("warmup", "warmup", train_supervised)
register_stage("sft", "sft", train_supervised)
register_stage("grpo", "rl", train_grpo)
register_stage("eval", None, evaluate_trained)
