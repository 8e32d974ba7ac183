"""Evaluation: decode a split with the policy and score the answers against the references.

Greedy decoding gives one answer per question; sampling gives `num_samples`, drawn from one
prefill like a GRPO group, each draw scored as a whole evaluation."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import pathlib
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sallm_jax.data.bad_input import SkipLog
from sallm_jax.data.chat_format import ChatFormat
from sallm_jax.data.manifest import ManifestRow
from sallm_jax.data.pipeline import BatchSpec, evaluation_batches
from sallm_jax.metrics.mmau import mmau_accuracy
from sallm_jax.metrics.text import text_metrics
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.rl.rollout import SamplingConfig, make_rollout_fn
from sallm_jax.rl.scoring import decode_completions
from sallm_jax.runtime.progress import track
from sallm_jax.runtime.record_files import read_json, write_atomically
from sallm_jax.runtime.stop_signal import check


def generate_answers(graphdef: nnx.GraphDef, params: nnx.State, frozen: nnx.State,
                     rows: Sequence[ManifestRow],
                     chat: ChatFormat, spec: BatchSpec, sampling: SamplingConfig, *,
                     partitioner: Partitioner, seed: int = 0,
                     skip_log: SkipLog | None = None,
                     num_samples: int = 1, name: str = "eval") -> list[list[str] | None]:
    """`num_samples` decoded answers per row, in row order, on every process (None: skipped row).

    `spec.batch_size` is per process; `name` labels the progress. A stop signal ends the pass before
    its next batch (`stop_signal.Preempted`); RuntimeError if a row not skipped has no answer."""
    skip_log = skip_log or SkipLog("error")
    params, frozen = partitioner.shard_params(params), partitioner.shard_params(frozen)
    generate = make_rollout_fn(graphdef, partitioner.param_shardings(params),
                               partitioner.param_shardings(frozen), partitioner,
                               sampling=sampling, group_size=num_samples,
                               eos_ids=chat.stop_ids, pad_id=chat.pad_id)
    answers: list[list[str] | None] = [None] * len(rows)
    rng = jax.random.key(seed)
    batches = evaluation_batches(rows, chat, spec, process_index=jax.process_index(),
                                 process_count=jax.process_count(), skip_log=skip_log)
    for i, batch in enumerate(track(batches, name, len(batches), unit="batch", leave=None)):
        check(name, collective=True)  # a stop signal: nothing of the pass is written
        out = generate(params, frozen, partitioner.device_batch(batch),
                       jax.random.fold_in(rng, i))
        ids, mask = (partitioner.gather(partitioner.to_local(x)) for x in (out.ids, out.mask))
        index, valid = partitioner.gather(batch["index"]), partitioner.gather(batch["valid"])
        texts = decode_completions(chat.tokenizer, ids, mask)
        for b, (row, ok) in enumerate(zip(index, valid, strict=True)):
            if ok:
                answers[row] = texts[b * num_samples:(b + 1) * num_samples]
    missing = [rows[i].id for i, a in enumerate(answers)
               if a is None and not skip_log.skipped(rows[i].id)]
    if missing:
        raise RuntimeError(f"evaluation produced no answer for {len(missing)} rows, e.g. "
                           f"{missing[:3]}")
    return answers


def task_metrics(rows: Sequence[ManifestRow], answers: Sequence[str]) -> dict[str, float]:
    """Multiple choice: MMAU accuracy (percent), overall and per category; else `text_metrics`."""
    metrics: dict[str, float] = {}
    choice = [i for i, row in enumerate(rows) if row.task == "aqa"]
    free = [i for i, row in enumerate(rows) if row.task != "aqa"]
    if choice:
        accuracy = mmau_accuracy([answers[i] for i in choice],
                                 [dataclasses.asdict(rows[i]) for i in choice])
        metrics.update({("accuracy" if k == "overall" else f"accuracy/{k}"): v
                        for k, v in accuracy.items()})
    if free:
        metrics.update(text_metrics([answers[i] for i in free], [rows[i].answer for i in free]))
    return metrics


def mean_over_draws(draws: Sequence[dict[str, float]]) -> dict[str, float]:
    """Each metric's mean over `draws`; with several, its population std as `<metric>_std`."""
    metrics = {name: float(np.mean([d[name] for d in draws])) for name in draws[0]}
    if len(draws) > 1:
        metrics.update({f"{name}_std": float(np.std([d[name] for d in draws]))
                        for name in draws[0]})
    return metrics


def evaluate(graphdef: nnx.GraphDef, params: nnx.State, frozen: nnx.State,
             rows: Sequence[ManifestRow], chat: ChatFormat,
             spec: BatchSpec, sampling: SamplingConfig, *,
             partitioner: Partitioner, out_dir: pathlib.Path | None = None,
             seed: int = 0, skip_log: SkipLog | None = None,
             num_samples: int = 1, name: str = "eval") -> dict[str, float]:
    """Decode `rows` (`num_samples` draws; 1 if greedy), score each draw; the metrics.

    `mean_over_draws` of `task_metrics`, with "num_examples", "num_skipped" (rows the "skip"
    bad-input policy left out) and "num_samples". With `out_dir`: predictions.jsonl, metrics.json,
    then done.json (`pass_key`), each atomic; a pass written with the same key is read back.
    ValueError for greedy decoding with `num_samples` != 1, or when every row was skipped."""
    if sampling.temperature == 0 and num_samples != 1:
        raise ValueError(f"num_samples: greedy decoding gives one answer, got {num_samples}")
    key = (pass_key(params, rows, sampling, num_samples, seed, partitioner)
           if out_dir is not None else None)
    if key is not None and (written := written_pass(out_dir, key)) is not None:
        logging.info("[%s] already written in %s; read back", name, out_dir)
        return written
    answers = generate_answers(graphdef, params, frozen, rows, chat, spec, sampling,
                               partitioner=partitioner, seed=seed, skip_log=skip_log,
                               num_samples=num_samples, name=name)
    scored = [i for i, answer in enumerate(answers) if answer is not None]
    if not scored:
        raise ValueError(f"{name}: all {len(rows)} rows were left out under "
                         "data.on_bad_input=skip; there is nothing to score")
    metrics = mean_over_draws([
        task_metrics([rows[i] for i in scored], [answers[i][draw] for i in scored])
        for draw in range(num_samples)])
    metrics["num_examples"] = len(scored)
    metrics["num_skipped"] = len(rows) - len(scored)
    metrics["num_samples"] = num_samples
    if out_dir is not None and jax.process_index() == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        lines = []
        for i in scored:
            record = {"id": rows[i].id, "question": rows[i].question,
                      "reference": rows[i].answer, "prediction": answers[i][0]}
            if num_samples > 1:
                record["draws"] = answers[i]
            lines.append(json.dumps(record) + "\n")
        write_atomically(out_dir / "predictions.jsonl", "".join(lines))
        write_atomically(out_dir / "metrics.json", json.dumps(metrics, indent=2))
        write_atomically(out_dir / "done.json", json.dumps({"key": key}))
    return metrics


@functools.cache
def _moments(replicated: jax.sharding.Sharding) -> Callable[[nnx.State], list[jax.Array]]:
    """Compiled: params -> per leaf [sum, sum of squares] in float32, `replicated`."""
    return jax.jit(lambda params: [
        jnp.stack([jnp.sum(x), jnp.sum(jnp.square(x))])
        for x in (leaf.astype(jnp.float32) for leaf in jax.tree.leaves(params))],
        out_shardings=replicated)


def pass_key(params: nnx.State, rows: Sequence[ManifestRow], sampling: SamplingConfig,
             num_samples: int, seed: int, partitioner: Partitioner) -> str:
    """SHA-256 of a pass's inputs: parameter moments, row ids, sampling, num_samples, seed."""
    moments = _moments(partitioner.replicated)(partitioner.shard_params(params))
    values = np.concatenate([np.asarray(m).ravel() for m in moments]).astype(np.float32)
    described = json.dumps({"rows": [row.id for row in rows], "num_samples": num_samples,
                            "sampling": dataclasses.asdict(sampling), "seed": seed})
    return hashlib.sha256(values.tobytes() + described.encode()).hexdigest()


def written_pass(out_dir: pathlib.Path, key: str) -> dict[str, float] | None:
    """The metrics of a pass `out_dir` holds whole for `key`; None when it holds none."""
    done = out_dir / "done.json"
    if not done.exists() or (read_json(done) or {}).get("key") != key:
        return None
    metrics = read_json(out_dir / "metrics.json")
    whole = isinstance(metrics, dict) and (out_dir / "predictions.jsonl").exists()
    return metrics if whole else None
