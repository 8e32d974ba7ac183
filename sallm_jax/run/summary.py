"""The start-up screen: model size, data sizes, stages (to run or done), work directory, cache."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence

import jax
import ml_collections
from flax import nnx

from sallm_jax.runtime.record_files import read_json
from sallm_jax.train.base import is_built


def parameter_counts(model: nnx.Module, trainable) -> tuple[int, int]:
    """(parameters, trainable ones) of `model`; `trainable` is an nnx filter of its Params."""
    params = nnx.state(model, nnx.Param)
    chosen = nnx.state(model, nnx.All(nnx.Param, trainable))
    return (sum(x.size for x in jax.tree.leaves(params)),
            sum(x.size for x in jax.tree.leaves(chosen)))


def _sizes(splits: Mapping[str, Sequence]) -> str:
    return ", ".join(f"{split} {len(rows):,}" for split, rows in splits.items())


def stage_line(cfg: ml_collections.ConfigDict, stage: str, workdir: pathlib.Path,
               base_dir: pathlib.Path | None, protocols: Sequence[str]) -> str:
    """What `stage` will do, in one line; "done" when its output is already there."""
    if stage == "eval":
        passes = [split + suffix for split in cfg.eval.splits for suffix in protocols]
        return f"eval    {', '.join(passes)} of each trained stage, batch {cfg.eval.batch_size}"
    s = cfg[stage]
    batch = (f"{s.batch_size} prompts x {s.group_size} completions" if stage == "grpo" else
             f"batch {s.batch_size}")
    text = f"{stage:<8}{s.steps} steps x {batch}, lr {s.learning_rate:g}"
    if s.eval_every:
        text += f", validation every {s.eval_every} steps"
    if stage == "base":
        if base_dir is None or not is_built(base_dir):
            return text + f" (built into {base_dir})"
        record = read_json(base_dir / "base.json")
        return text + (f" (cached in {base_dir}; held-out WER {record['heldout_asr']['wer']:.2f} %"
                       f"{', shipped' if 'shipped' in record else ''})")
    return text + (" (done)" if (workdir / stage / "params").exists() else "")


def run_summary(cfg: ml_collections.ConfigDict, *, workdir: pathlib.Path,
                cache_dir: pathlib.Path, splits: Mapping[str, Sequence],
                base_splits: Mapping[str, Sequence] | None, parameters: tuple[int, int],
                base_dir: pathlib.Path | None, protocols: Sequence[str]) -> str:
    """The start-up screen of a run of `cfg`; `parameters` is (all, trainable), `protocols`
    the evaluation suffixes ("" and "_greedy")."""
    total, trainable = parameters
    source = cfg.model.checkpoint or "a new model of model.text / model.audio's sizes"
    adapters = f", LoRA rank {cfg.lora.rank} on {cfg.lora.trainable}" if cfg.lora.rank else ""
    lines = [f"run       {workdir}",
             f"cache     {cache_dir}",
             f"model     {total:,} parameters, {trainable:,} trainable{adapters} ({source})",
             f"data      {cfg.data.name}: {_sizes(splits)} rows"]
    if base_splits is not None:
        lines.append(f"          base corpus (embedded ASR): {_sizes(base_splits)} rows")
    lines.append("stages")
    lines += [f"  {stage_line(cfg, s, workdir, base_dir, protocols)}" for s in cfg.stages]
    lines.append("Each stage shows its rate and time left as it runs.")
    return "\n".join(lines)
