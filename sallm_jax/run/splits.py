"""The task's data splits a run reads: their manifests, which ones it needs, and their rows,
read and screened at start-up (`EmptySplit` for one with no usable row)."""

from __future__ import annotations

import collections
import functools
import pathlib
from collections.abc import Callable
from typing import TypeVar

import jax
import ml_collections
from jax.experimental import multihost_utils

from sallm_jax.data.bad_input import SkipLog
from sallm_jax.data.chat_format import ChatFormat
from sallm_jax.data.embedded_common import SPLITS
from sallm_jax.data.embedded_sets import task_sets
from sallm_jax.data.manifest import ManifestRow, read_manifest
from sallm_jax.data.pipeline import BatchSpec, screen_rows
from sallm_jax.run.validate import require
from sallm_jax.runtime.user_errors import UserError
from sallm_jax.stages import STAGES
from sallm_jax.train.base import default_cache_dir

T = TypeVar("T")


def first_process_then_rest(name: str, fn):
    """Run `fn` on process 0, then on the others (which then find its cached output)."""
    if jax.process_count() == 1:
        return fn()
    result = fn() if jax.process_index() == 0 else None
    multihost_utils.sync_global_devices(name)
    return fn() if jax.process_index() != 0 else result


def manifest_paths(cfg: ml_collections.ConfigDict) -> dict[str, str]:
    """Split -> manifest path of data section `cfg`: data.<split>_manifest, or an embedded set's,
    built once under <cache>/<name>/ (or data.root). ConfigError naming data.name when unknown,
    or data.<split>_manifest when no such file."""
    embedded_sets = task_sets()
    if cfg.name in embedded_sets:
        # A folder per build: a run never replaces the files another run is reading.
        build = f"seed{cfg.seed}-{cfg.num_train}-{cfg.num_validation}-{cfg.num_test}"
        root = pathlib.Path(cfg.root).expanduser() if cfg.root else (
            default_cache_dir() / cfg.name / build)
        manifests = first_process_then_rest("data", lambda: embedded_sets[cfg.name].build(
            root, seed=cfg.seed, num_train=cfg.num_train, num_validation=cfg.num_validation,
            num_test=cfg.num_test))
    else:
        require(cfg.name == "manifest", "data.name",
                f"'manifest' or one of {sorted(embedded_sets)}", cfg.name)
        manifests = {s: cfg[f"{s}_manifest"] for s in SPLITS if cfg[f"{s}_manifest"]}
        for split, path in manifests.items():
            require(pathlib.Path(path).is_file(), f"data.{split}_manifest",
                    f"a manifest file (none in {pathlib.Path.cwd()})", path)
    return {split: str(path) for split, path in manifests.items()}


def load_splits(cfg: ml_collections.ConfigDict,
                skip_log: SkipLog | None = None) -> dict[str, list[ManifestRow]]:
    """Rows of each split (`manifest_paths`); what the quickstart notebook shows."""
    return {split: read_manifest(path, skip_log) for split, path in manifest_paths(cfg).items()}


class EmptySplit(UserError, ValueError):
    """A split the run reads with no usable row: an empty manifest, or every row left out."""


def scored_splits(cfg: ml_collections.ConfigDict) -> list[str]:
    """The task's splits the run scores: eval.splits with the eval stage, and validation when
    a task training stage (not base) has eval_every > 0."""
    sections = [STAGES[name].section for name in cfg.stages]
    splits = list(cfg.eval.splits) if None in sections else []
    if any(cfg[s].eval_every for s in sections if s not in (None, "base")):
        splits.append("validation")
    return list(dict.fromkeys(splits))


def splits_used(cfg: ml_collections.ConfigDict) -> list[str]:
    """The task's splits the run reads: train if a stage besides base trains; `scored_splits`."""
    trains = any(STAGES[name].section not in (None, "base") for name in cfg.stages)
    return list(dict.fromkeys((["train"] if trains else []) + scored_splits(cfg)))


def skips_during(skip_log: SkipLog, action: Callable[[], T]) -> tuple[T, collections.Counter]:
    """`action()` and the skips it recorded in `skip_log`, by reason."""
    before = collections.Counter(skip_log.counts)
    return action(), skip_log.counts - before


def check_rows_left(split: str, manifest: str, num_rows: int, usable: int,
                    skipped: collections.Counter, skip_log: SkipLog) -> None:
    """`EmptySplit` naming the manifest and its skips by reason when `usable` is 0."""
    if usable:
        return
    if not num_rows and not skipped:
        raise EmptySplit(f"{manifest}: the {split} split has no rows (the manifest holds no "
                         "example), and the run needs it")
    reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(skipped.items()))
    raise EmptySplit(f"{manifest}: every row of the {split} split was left out under "
                     f"data.on_bad_input=skip ({sum(skipped.values())} skipped: {reasons}; each "
                     f"in {skip_log.path}), and the run needs it; fix or replace those rows")


def read_splits(manifests: dict[str, str], used: list[str], skip_log: SkipLog
                ) -> tuple[dict[str, list[ManifestRow]], dict[str, collections.Counter]]:
    """(rows, skips by reason) of each split's manifest; `EmptySplit` for a split in `used`
    with no row (`check_rows_left`)."""
    splits, skipped = {}, {}
    for split, path in manifests.items():
        splits[split], skipped[split] = skips_during(
            skip_log, functools.partial(read_manifest, path, skip_log))
        if split in used:
            check_rows_left(split, path, len(splits[split]), len(splits[split]), skipped[split],
                            skip_log)
    return splits, skipped


def screen_splits(splits: dict[str, list[ManifestRow]], manifests: dict[str, str],
                  skipped: dict[str, collections.Counter], used: list[str], spec: BatchSpec,
                  chat: ChatFormat, skip_log: SkipLog) -> None:
    """`screen_rows` over each split in `used`; `EmptySplit` for one left empty."""
    for split in used:
        buckets, screened = skips_during(skip_log, functools.partial(
            screen_rows, splits[split], spec, skip_log, chat))
        check_rows_left(split, manifests[split], len(splits[split]), int((buckets >= 0).sum()),
                        skipped[split] + screened, skip_log)
