"""The `base` stage (`train/base.py`): the configured model trained from scratch on the embedded
ASR corpus, cached by its settings; its section's defaults and checks."""

from __future__ import annotations

import logging

import ml_collections
from flax import nnx

from sallm_jax.eval.evaluate import evaluate
from sallm_jax.rl.rollout import SamplingConfig
from sallm_jax.runtime.user_errors import require
from sallm_jax.stages.checks import positive_ints
from sallm_jax.stages.supervised import check_sft_keys, sft_section
from sallm_jax.train.base import finish_base, is_built, unmark_built
from sallm_jax.train.health import HealthCheck
from sallm_jax.train.params_io import restore_or_set_aside, save_params
from sallm_jax.train.sft import run_sft
from sallm_jax.train.wandb_mirror import wandb_settings


def base_section() -> ml_collections.ConfigDict:
    """The base model's supervised settings, its corpus (num_train clips; validation clips
    give the held-out WER) and seed."""
    c = sft_section(steps=3000, batch_size=20, learning_rate=2e-3, warmup_steps=100,
                    max_target_tokens=20, checkpoint_every=100, ctc_weight=0.3)
    c.num_train, c.num_validation, c.seed = 4000, 100, 0
    # A base shipped under these settings' key (sallm_jax/bases/, `sallm-jax build-base`) is
    # loaded into the cache instead of trained; False trains it.
    c.use_shipped = True
    return c


def check_base(cfg: ml_collections.ConfigDict, name: str) -> None:
    """The supervised keys and corpus sizes of `cfg[name]`; ConfigError when model.checkpoint
    or tokenizer.path is set (the stage trains from scratch, with its own tokenizer)."""
    check_sft_keys(cfg[name], name)
    require(not cfg.model.checkpoint, "model.checkpoint",
            f"'' with the {name} stage (it trains the configured sizes from scratch; drop "
            f"'{name}' from stages to start from a checkpoint)", cfg.model.checkpoint)
    require(not cfg.tokenizer.path, "tokenizer.path",
            f"'' with the {name} stage (the base model brings its own tokenizer)",
            cfg.tokenizer.path)
    positive_ints(cfg[name], name, ("num_train", "num_validation"))


def train_base(experiment, name: str, start: nnx.State) -> nnx.State:
    """The base model from its cache, else supervised on the ASR corpus and scored greedily on
    its held-out split. An unreadable cache is built again, resuming from its checkpoints."""
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
