"""Start-up checks of an experiment config; every error is a `ConfigError` naming the key.

Checked here: data, model, tokenizer, lora, train, logging, `stages` and each training stage's
`start`; each configured stage checks its own section (`register_stage`'s `check`).
"""

from __future__ import annotations

import pathlib

import ml_collections

from sallm_jax.data.bad_input import POLICIES
from sallm_jax.run.new_model import check_new_model
from sallm_jax.runtime.user_errors import (
    RENAMED_SECTIONS,
    ConfigError,
    renamed_section_error,
    require,
)
from sallm_jax.stages import STAGES, training_stages
from sallm_jax.train.health import POLICIES as NONFINITE_POLICIES
from sallm_jax.train.wandb_mirror import import_wandb

__all__ = ["ConfigError", "require", "validate_config"]

TRAINABLE = ("adapters", "adapters+projector", "adapters+projector+encoder", "all")


def _starts(cfg: ml_collections.ConfigDict, stages: tuple[str, ...]) -> None:
    """Each configured training stage starts from "", "init" or a training stage before it."""
    trains = training_stages()
    for index, stage in enumerate(stages):
        if stage in trains:
            start = cfg[stage].start
            earlier = [s for s in stages[:index] if s in trains]
            require(start in ("", "init") or start in earlier, f"{stage}.start",
                    f"'' (the previous training stage), 'init' (the initial parameters) or one "
                    f"of the training stages before {stage!r} in stages, {earlier}", start)


def validate_config(cfg: ml_collections.ConfigDict) -> None:
    """Raise ConfigError for the first setting that cannot work (see the module docstring)."""
    for old in RENAMED_SECTIONS:
        if old in cfg:
            raise renamed_section_error(old)
    stages = tuple(cfg.stages)
    require(bool(stages) and all(s in STAGES for s in stages), "stages",
            f"a non-empty sequence of {tuple(STAGES)}", stages)
    require(cfg.data.on_bad_input in POLICIES, "data.on_bad_input", f"one of {POLICIES}",
            cfg.data.on_bad_input)
    require(isinstance(cfg.data.num_workers, int) and cfg.data.num_workers >= 0,
            "data.num_workers", "a non-negative integer", cfg.data.num_workers)
    buckets = tuple(cfg.data.audio_buckets_s)
    require(bool(buckets) and all(b > 0 for b in buckets) and list(buckets) == sorted(buckets),
             "data.audio_buckets_s", "increasing positive durations in seconds", buckets)
    if not cfg.model.checkpoint:  # a checkpoint's own limits are checked when it loads
        check_new_model(cfg)
    require(cfg.model.dtype in ("float32", "bfloat16"), "model.dtype", "float32 or bfloat16",
            cfg.model.dtype)
    require(cfg.model.compute_dtype in ("", "float32", "bfloat16"), "model.compute_dtype",
            "'' (model.dtype), float32 or bfloat16", cfg.model.compute_dtype)
    require(cfg.train.on_nonfinite in NONFINITE_POLICIES, "train.on_nonfinite",
            f"one of {NONFINITE_POLICIES}", cfg.train.on_nonfinite)
    require(cfg.train.max_nonfinite_skips >= 0, "train.max_nonfinite_skips", "an integer >= 0",
            cfg.train.max_nonfinite_skips)
    if cfg.logging.wandb:
        import_wandb()  # a ConfigError when the extra is not installed
        require(isinstance(cfg.logging.wandb_project, str) and bool(cfg.logging.wandb_project),
                "logging.wandb_project", "a W&B project name", cfg.logging.wandb_project)
    require(isinstance(cfg.lora.rank, int) and cfg.lora.rank >= 0, "lora.rank",
            "an integer >= 0", cfg.lora.rank)
    require(cfg.lora.trainable in TRAINABLE, "lora.trainable", f"one of {TRAINABLE}",
            cfg.lora.trainable)
    require(not cfg.init_params or pathlib.Path(cfg.init_params).expanduser().is_dir(),
            "init_params", "'' or a directory of saved parameters (<workdir>/<stage>/params)",
            cfg.init_params)
    require(not cfg.tokenizer.path or (pathlib.Path(cfg.tokenizer.path).expanduser()
                                       / "tokenizer.json").is_file(),
            "tokenizer.path", "'' or a directory holding tokenizer.json", cfg.tokenizer.path)
    if cfg.data.name == "manifest":
        for split in ("train", "test"):
            key = f"{split}_manifest"
            require(bool(cfg.data[key]), f"data.{key}", "a manifest path", cfg.data[key])
    _starts(cfg, stages)
    for stage in stages:
        STAGES[stage].check(cfg, stage)
