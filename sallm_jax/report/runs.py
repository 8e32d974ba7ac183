"""What a run's work directory holds, read back for the report: training scalars, logged GRPO
groups, evaluation results and predictions, the config against its preset, stage timings and
skipped inputs (layout in `sallm_jax.run.experiment`'s docstring)."""

from __future__ import annotations

import collections
import dataclasses
import importlib
import json
import math
import pathlib
import struct
from collections.abc import Iterator

from sallm_jax.runtime.user_errors import RENAMED_SECTIONS

TRAINING_STAGES = ("base", "warmup", "sft", "grpo")
# Preset names the config files take (`configs/<name>.py:<preset>`); a file that does not know
# one raises ValueError and is passed over.
PRESET_NAMES = ("tiny", "smoke", "paper", "paper_mp")
CONFIG_MODULES = ("sqa_grpo", "sqa_sft", "ast_grpo", "aqa_grpo")


@dataclasses.dataclass
class Run:
    """One work directory: `label` names it in tables and legends."""

    label: str
    path: pathlib.Path


def find_runs(workdirs: list[pathlib.Path]) -> list[Run]:
    """The runs in `workdirs`: a directory with a config.json, else every run up to two levels below
    it (`grpo_vs_sft`'s), labelled by its path below it."""
    runs = []
    for workdir in workdirs:
        # Several directories: their paths tell the runs apart.
        prefix = f"{workdir}/" if len(workdirs) > 1 else ""
        if (workdir / "config.json").exists():
            runs.append(Run(str(workdir) if prefix else workdir.name or str(workdir), workdir))
            continue
        nested = sorted({p.parent for pattern in ("*/config.json", "*/*/config.json")
                         for p in workdir.glob(pattern)})
        if not nested:
            raise FileNotFoundError(f"{workdir}: no config.json here or in the directories "
                                    f"below it; expected a run's work directory")
        runs.extend(Run(prefix + str(p.relative_to(workdir)), p) for p in nested)
    return runs


def read_jsonl(path: pathlib.Path) -> list[dict]:
    """The records of a JSONL file (a line cut short by a kill is left out); [] without one."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def read_config(run: Run) -> dict:
    """The run's config.json as JSON data ({} without one), in today's section names."""
    path = run.path / "config.json"
    return current_names(json.loads(path.read_text())) if path.exists() else {}


def current_names(config: dict) -> dict:
    """`config` with each section a release renamed (`RENAMED_SECTIONS`: a run's `rl` is now
    `grpo`) under its new name, so the runs of an older version read as today's."""
    def name(key: str) -> str:
        new = RENAMED_SECTIONS.get(key)
        return new if new is not None and new not in config else key

    return {name(key): value for key, value in config.items()}


def base_train_dir(config: dict) -> pathlib.Path | None:
    """Where the run's base model trained (`$SALLM_JAX_CACHE/base/<key>/train`), when its
    stages include the base and that directory exists."""
    if "base" not in config.get("stages", ()):
        return None
    import ml_collections

    from sallm_jax.train.base import base_directory, default_cache_dir

    try:
        directory = base_directory(ml_collections.ConfigDict(config), default_cache_dir())
    except (KeyError, AttributeError, TypeError):
        return None
    return directory / "train" if (directory / "train").exists() else None


def stage_dirs(run: Run, config: dict) -> dict[str, pathlib.Path]:
    """Training stage -> the directory holding its metrics.jsonl and tensorboard/."""
    dirs = {s: run.path / s for s in TRAINING_STAGES if (run.path / s / "metrics.jsonl").exists()}
    base = base_train_dir(config) if "base" not in dirs else None
    if base is not None and (base / "metrics.jsonl").exists():
        dirs = {"base": base, **dirs}
    return dirs


def read_metrics(directories: dict[str, pathlib.Path]) -> dict[str, list[dict]]:
    """Stage -> its metrics.jsonl records ({"stage", "step", scalar: value, ...})."""
    return {stage: read_jsonl(d / "metrics.jsonl") for stage, d in directories.items()}


def series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the records that hold `key`, in file order."""
    kept = [r for r in records if key in r]
    return [int(r["step"]) for r in kept], [float(r[key]) for r in kept]


def read_events(path: pathlib.Path) -> Iterator:
    """The `Event` protos of a TensorBoard event file (TFRecord framing: length, its CRC, the
    record, its CRC); a record cut short by a kill ends the file."""
    from tensorboardX.proto.event_pb2 import Event

    data = path.read_bytes()
    offset = 0
    while offset + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[offset:offset + 8])
        end = offset + 12 + length
        if end + 4 > len(data):
            return
        yield Event.FromString(data[offset + 12:end])
        offset = end + 4


def stage_events(directory: pathlib.Path) -> list:
    """Every event of a stage's tensorboard/ files, in the order they were written."""
    files = sorted((directory / "tensorboard").glob("events.out.tfevents.*"))
    return sorted((e for f in files for e in read_events(f)), key=lambda e: e.wall_time)


@dataclasses.dataclass
class LoggedGroup:
    """The first group of a logged GRPO step (`<stage>/completions.jsonl`): prompt, reference, and
    each sample's completion, reward, reward by function, advantage and ground-truth flag."""

    step: int
    id: str
    question: str
    reference: str
    samples: list[dict]


def logged_groups(directory: pathlib.Path) -> list[LoggedGroup]:
    """The first group of every step a stage logged, by step."""
    path = directory / "completions.jsonl"
    if not path.exists():
        return []
    groups = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        first = record["groups"][0]
        groups.append(LoggedGroup(record["step"], first["id"], first["question"],
                                  first["reference"], first["samples"]))
    return groups


@dataclasses.dataclass
class StageTiming:
    """When a stage's scalars were written: wall seconds from its writer's start to its last
    record (pauses between a resumed stage's starts included), and its logged step times."""

    seconds: float
    mean_step_seconds: float | None
    mean_tokens_per_s: float | None


def stage_timing(directory: pathlib.Path, records: list[dict]) -> StageTiming | None:
    events = stage_events(directory)
    if len(events) < 2:
        return None

    def mean(key: str) -> float | None:
        values = series(records, key)[1]
        # Each start's first step compiles its programs; leave it out when there are others.
        values = values[1:] if len(values) > 1 else values
        return sum(values) / len(values) if values else None

    return StageTiming(events[-1].wall_time - events[0].wall_time, mean("step_seconds"),
                       mean("tokens_per_s"))


def read_results(run: Run) -> dict:
    """results.json: stage -> evaluation (split, `<split>_greedy`) -> metrics; {} without it."""
    path = run.path / "results.json"
    return json.loads(path.read_text()) if path.exists() else {}


def read_base_record(config: dict) -> dict:
    """The cached base model's base.json (its held-out ASR scores), {} when not found."""
    train = base_train_dir(config)
    path = train.parent / "base.json" if train is not None else None
    return json.loads(path.read_text()) if path is not None and path.exists() else {}


def read_predictions(run: Run, stage: str, evaluation: str) -> list[dict]:
    """eval/<stage>/<evaluation>/predictions.jsonl: id, question, reference, prediction, and
    every draw of a sampled evaluation."""
    return read_jsonl(run.path / "eval" / stage / evaluation / "predictions.jsonl")


def skipped_counts(run: Run) -> dict[str, int]:
    """skipped.jsonl's examples by reason (each (id, source) once, as the run recorded them)."""
    return dict(collections.Counter(r.get("reason", "?") for r in
                                    read_jsonl(run.path / "skipped.jsonl")))


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """{"grpo": {"beta": 0.02}} -> {"grpo.beta": 0.02}; lists stay values."""
    flat: dict[str, object] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def preset_config(spec: str) -> dict:
    """The resolved config of `configs/<name>.py[:preset]` (or `<name>[:preset]`) as JSON data."""
    name, _, preset = spec.partition(":")
    module = importlib.import_module(f"sallm_jax.configs.{pathlib.Path(name).stem}")
    config = module.get_config(preset) if preset else module.get_config()
    return json.loads(config.to_json_best_effort())


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


MISSING = "(absent)"  # the side of a diff that lacks the key (a config of another version)


def config_diff(config: dict, preset: dict) -> dict[str, tuple[object, object]]:
    """Key -> (the preset's value, the run's) for every key where they differ; a key only one
    side has shows MISSING on the other."""
    ours, theirs = flatten(config), flatten(preset)
    return {k: (theirs.get(k, MISSING), ours.get(k, MISSING))
            for k in sorted(ours.keys() | theirs.keys())
            if k not in ours or k not in theirs or not _same(theirs[k], ours[k])}


def closest_preset(config: dict) -> tuple[str, dict[str, tuple[object, object]]] | None:
    """(`configs/<name>.py:<preset>`, its diff) of the preset with the fewest keys that differ
    from `config`; None when the shipped configs cannot be imported."""
    best = None
    for module in CONFIG_MODULES:
        for preset in PRESET_NAMES:
            spec = f"configs/{module}.py:{preset}"
            try:
                diff = config_diff(config, preset_config(spec))
            except ValueError:  # a preset this file does not have
                continue
            except ImportError:
                return None
            if best is None or len(diff) < len(best[1]):
                best = (spec, diff)
    return best
