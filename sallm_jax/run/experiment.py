"""Runs a config's stages (base -> warmup -> sft, grpo -> eval) in a work directory; resumes.

Work directory layout:
  .lock, config.json        the run's lock (pid, host, start time); the resolved config
  tokenizer/                trained on the training text when no tokenizer or base stage gives one
  <stage>/checkpoints/      Orbax checkpoints of a training stage (state + data iterator)
  <stage>/params/           the stage's final parameters; their presence marks the stage done
  <stage>/best-<step>/, best.json   the best parameters on validation so far (eval_every)
  <stage>/metrics.jsonl, <stage>/tensorboard/   training scalars
  eval/<stage>/<split>[_greedy]/   predictions.jsonl and metrics.json
  results.json              {stage: {"test": {"bleu": ..., "bleu_std": ...}, "test_greedy": ...}}
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import pathlib
import tempfile

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx
from jax.experimental import multihost_utils

from sallm_jax.data.bad_input import SkipLog
from sallm_jax.data.chat_format import ChatFormat, chat_format
from sallm_jax.data.embedded_sqa import embedded_corpus_texts
from sallm_jax.data.manifest import ManifestRow
from sallm_jax.data.pipeline import BatchSpec
from sallm_jax.data.tokenizer import load_or_train_tokenizer, load_tokenizer
from sallm_jax.eval.evaluate import evaluate
from sallm_jax.metrics.names import SUMMARY
from sallm_jax.models.attention import set_fused_attention
from sallm_jax.models.families import families, family_for_model, num_audio_tokens
from sallm_jax.models.hub.load import Checkpoint, load_checkpoint
from sallm_jax.models.hub.resolve import resolve_checkpoint
from sallm_jax.models.layer_scan import set_scan_layers
from sallm_jax.models.lora import apply_lora, lora_modules, trainable_filter
from sallm_jax.models.remat import set_remat
from sallm_jax.parallel.distributed import initialize as initialize_distributed
from sallm_jax.parallel.mesh import make_mesh
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.parallel.sharding import data_parallel_size
from sallm_jax.report import write_report_or_warn
from sallm_jax.rl.rollout import SamplingConfig
from sallm_jax.run.new_model import new_model_config, prompt_family
from sallm_jax.run.splits import (
    first_process_then_rest,
    manifest_paths,
    read_splits,
    screen_splits,
    splits_used,
)
from sallm_jax.run.summary import parameter_counts, run_summary
from sallm_jax.run.validate import require, validate_config
from sallm_jax.runtime.host_memory import return_freed_arrays, trim_after_compiles
from sallm_jax.runtime.record_files import write_atomically
from sallm_jax.runtime.user_errors import UserError
from sallm_jax.stages import STAGES
from sallm_jax.train.base import (
    base_directory,
    base_tokenizer,
    build_corpus,
    default_cache_dir,
    is_built,
    read_corpus,
)
from sallm_jax.train.params_io import restore_params, save_params
from sallm_jax.train.preemption import StopSignal, stop_before
from sallm_jax.train.shipped_base import (
    install_params,
    install_tokenizer,
    load_shipped,
    shipped_base,
)
from sallm_jax.train.workdir_lock import WorkdirLock


def prepare_tokenizer(cfg: ml_collections.ConfigDict, splits: dict[str, list[ManifestRow]],
                      workdir: pathlib.Path):
    """The configured tokenizer, or one trained on the training text and kept in the workdir."""
    if cfg.tokenizer.path:
        return load_tokenizer(pathlib.Path(cfg.tokenizer.path).expanduser())
    return first_process_then_rest("tokenizer", lambda: load_or_train_tokenizer(
        workdir / "tokenizer", lambda: embedded_corpus_texts(splits["train"]),
        cfg.tokenizer.vocab_size))


def build_model(cfg: ml_collections.ConfigDict, splits: dict[str, list[ManifestRow]],
                workdir: pathlib.Path, tokenizer=None,
                partitioner: Partitioner | None = None) -> tuple[nnx.Module, ChatFormat]:
    """(model, chat format) of model.checkpoint, or of a new model.family at the configured sizes
    with `tokenizer` (default: tokenizer.path or one trained here); LoRA added if lora.rank > 0.
    With `partitioner`, each process reads its rows of the checkpoint into their shardings.
    Turns on returning freed host memory to the system (`host_memory`)."""
    return_freed_arrays()
    trim_after_compiles()
    eos_token_ids: tuple[int, ...] = ()
    if cfg.model.checkpoint:
        adapter = cfg.lora.adapter_dir
        checkpoint = load_checkpoint(
            resolve_checkpoint(cfg.model.checkpoint, "model.checkpoint"),
            dtype=cfg.model.dtype, compute_dtype=cfg.model.compute_dtype or None,
            adapter_dir=resolve_checkpoint(adapter, "lora.adapter_dir") if adapter else None,
            shardings=partitioner and partitioner.param_shardings)
        model, tokenizer = checkpoint.model, checkpoint.tokenizer
        if cfg.tokenizer.path or tokenizer is None:
            tokenizer = prepare_tokenizer(cfg, splits, workdir)
        else:
            eos_token_ids = checkpoint.processor.eos_token_ids
    else:
        tokenizer = tokenizer or prepare_tokenizer(cfg, splits, workdir)
        # Log-probs and losses stay float32 whatever the compute dtype.
        param_dtype = jnp.dtype(cfg.model.dtype)
        dtype = jnp.dtype(cfg.model.compute_dtype or cfg.model.dtype)
        # With a base stage the new model is the base's starting point, which its cache key
        # names by base.seed.
        seed = cfg.base.seed if "base" in cfg.stages else cfg.seed
        family = families()[cfg.model.family]
        model = family.model_class(model_config(cfg, tokenizer), rngs=nnx.Rngs(seed),
                                   dtype=dtype, param_dtype=param_dtype)
    chat = chat_format(tokenizer, prompt_family(tokenizer, family_for_model(model)),
                       model.config.audio_token_id, system_prompt=cfg.data.system_prompt or None,
                       eos_token_ids=eos_token_ids)
    set_remat(model, cfg.model.remat)
    set_fused_attention(model, cfg.model.fused_attention)
    if cfg.lora.rank and not any(True for _ in lora_modules(model)):
        apply_lora(model, rank=cfg.lora.rank, alpha=cfg.lora.alpha,
                   target_modules=tuple(cfg.lora.target_modules), rngs=nnx.Rngs(cfg.seed))
    set_scan_layers(model, cfg.model.scan_layers)  # after LoRA: the adapters stack too
    return model, chat


def model_config(cfg: ml_collections.ConfigDict, tokenizer):
    """`new_model_config` at the tokenizer's vocabulary and audio placeholder id."""
    placeholder = prompt_family(tokenizer, families()[cfg.model.family]).audio_token
    return new_model_config(cfg, len(tokenizer), tokenizer.convert_tokens_to_ids(placeholder))


def batch_spec(cfg: ml_collections.ConfigDict, model, key: str,
               max_target_tokens: int, partitioner: Partitioner | None = None) -> BatchSpec:
    """Shapes of this process's batches for the global batch size at config key `key`; with
    `partitioner`, ConfigError unless it divides by data x fsdp and by the process count."""
    section, name = key.split(".")
    global_size = cfg[section][name]
    if partitioner is not None:
        splits = data_parallel_size(partitioner.mesh)
        require(global_size % splits == 0 and global_size % jax.process_count() == 0, key,
                 f"a multiple of the data x fsdp mesh size ({splits}) and of the process count "
                 f"({jax.process_count()})", global_size)
    return BatchSpec(num_audio_tokens=functools.partial(num_audio_tokens, model),
                     batch_size=global_size // jax.process_count(),
                     truncate_long_audio=cfg.data.truncate_long_audio,
                     audio_buckets_s=tuple(cfg.data.audio_buckets_s),
                     max_prompt_text_tokens=cfg.data.max_prompt_text_tokens,
                     max_target_tokens=max_target_tokens)


def format_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """One row per (stage, evaluation), one column per metric (mean ± std over sampled draws)."""
    names = [n for n in SUMMARY
             if any(n in metrics for by_split in results.values() for metrics in by_split.values())]
    lines = [f"{'stage':<8}{'evaluation':<16}" + "".join(f"{n:>16}" for n in names)]
    for stage, by_split in results.items():
        for split, metrics in by_split.items():
            cells = []
            for n in names:
                cell = f"{metrics[n]:.2f}" if n in metrics else "-"
                if f"{n}_std" in metrics:
                    cell += f" ± {metrics[f'{n}_std']:.2f}"
                cells.append(f"{cell:>16}")
            lines.append(f"{stage:<8}{split:<16}" + "".join(cells))
    return "\n".join(lines)


def shipped_to_install(cfg: ml_collections.ConfigDict, directory: pathlib.Path | None
                       ) -> tuple[pathlib.Path, dict, Checkpoint] | None:
    """The shipped base of `directory`'s key when the cache holds no finished base and
    base.use_shipped is on (`train.shipped_base`), else None."""
    if directory is None or not cfg.base.use_shipped or is_built(directory):
        return None
    shipped = shipped_base(directory)
    if shipped is None:
        return None
    logging.info("[base] loading the shipped base %s into %s", shipped, directory)
    return (shipped, *load_shipped(shipped))


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def enable_compilation_cache() -> None:
    """Keep compiled programs under <cache>/xla for resumed runs and later evaluations."""
    jax.config.update("jax_compilation_cache_dir", str(default_cache_dir() / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def sampling_protocols(cfg: ml_collections.ConfigDict) -> dict[str, tuple[SamplingConfig, int]]:
    """Evaluation suffix -> (decoding, draws per question): the configured protocol under the
    split's own name, and greedy decoding under "<split>_greedy" when eval.greedy adds it."""
    e = cfg.eval
    protocols = {"": (SamplingConfig(max_new_tokens=e.max_new_tokens, temperature=e.temperature,
                                     top_k=e.top_k, top_p=e.top_p),
                      e.num_samples if e.temperature > 0 else 1)}
    if e.greedy and e.temperature > 0:
        protocols["_greedy"] = (SamplingConfig(max_new_tokens=e.max_new_tokens, temperature=0.0),
                                1)
    return protocols


class Experiment:
    """What a run's stages share: model parts, chat format, data, mesh, trained parameters."""

    def __init__(self, cfg: ml_collections.ConfigDict, workdir: pathlib.Path):
        self.cfg, self.workdir = cfg, workdir
        self.partitioner = Partitioner(make_mesh(cfg.parallel.mesh),
                                       tuple(map(tuple, cfg.parallel.rules)))
        self.skip_log = SkipLog(cfg.data.on_bad_input, workdir / "skipped.jsonl")
        manifests = manifest_paths(cfg.data)
        used = [split for split in splits_used(cfg) if split in manifests]
        self.splits, skipped = read_splits(manifests, used, self.skip_log)
        self.base_dir = base_directory(cfg, default_cache_dir()) if "base" in cfg.stages else None
        shipped = shipped_to_install(cfg, self.base_dir)
        if shipped is not None:
            install_tokenizer(shipped[2], self.base_dir)
            _sync("shipped tokenizer")
        if self.base_dir is not None:
            self.corpus = read_corpus(first_process_then_rest(
                "corpus", lambda: build_corpus(cfg, default_cache_dir())))
            tokenizer = first_process_then_rest("base tokenizer", lambda: base_tokenizer(
                self.base_dir, self.corpus["train"], cfg.tokenizer.vocab_size, cfg.base.seed))
        else:
            tokenizer = None
        model, self.chat = build_model(cfg, self.splits, workdir, tokenizer, self.partitioner)
        self.model_config = model.config
        trainable = trainable_filter(cfg.lora.trainable) if cfg.lora.rank else nnx.Param
        self.parameters = parameter_counts(model, trainable)
        self.graphdef, params, self.frozen = nnx.split(model, trainable, ...)
        if shipped is not None:
            install_params(*shipped, self.base_dir, params, save_params)
            _sync("shipped base")
        if cfg.init_params:
            params = restore_params(pathlib.Path(cfg.init_params).expanduser(), params,
                                    self.partitioner)
        self.initial = params
        self.trained: dict[str, nnx.State] = {}
        self.protocols = sampling_protocols(cfg)
        self.eval_spec = batch_spec(cfg, model.config, "eval.batch_size", cfg.eval.max_new_tokens,
                                    self.partitioner)
        screen_splits(self.splits, manifests, skipped, used, self.eval_spec, self.chat,
                      self.skip_log)

    def spec(self, section: str, max_target_tokens: int) -> BatchSpec:
        return batch_spec(self.cfg, self.model_config, f"{section}.batch_size", max_target_tokens,
                          self.partitioner)

    def summary(self) -> str:
        """The start-up screen (`run_summary`)."""
        return run_summary(self.cfg, workdir=self.workdir, cache_dir=default_cache_dir(),
                           splits=self.splits, parameters=self.parameters,
                           base_splits=self.corpus if self.base_dir is not None else None,
                           base_dir=self.base_dir, protocols=tuple(self.protocols))

    def evaluate(self, params: nnx.State, rows, protocol: str = "",
                 out_dir: pathlib.Path | None = None, name: str = "eval") -> dict[str, float]:
        """Metrics of `params` on `rows` under `protocol` ("" or "_greedy"); files in `out_dir`."""
        sampling, num_samples = self.protocols[protocol]
        return evaluate(self.graphdef, params, self.frozen, rows, self.chat, self.eval_spec,
                        sampling, partitioner=self.partitioner, out_dir=out_dir,
                        seed=self.cfg.seed, skip_log=self.skip_log, num_samples=num_samples,
                        name=name)

    def validator(self, metric: str):
        """params -> the validation split's `metric`; None without a validation split."""
        if "validation" not in self.splits:
            return None
        return lambda params: self.evaluate(params, self.splits["validation"],
                                            name="validation")[metric]

    def start_params(self, section: ml_collections.ConfigDict, previous: nnx.State) -> nnx.State:
        """Where a stage starts: the stage `start` names, the initial parameters ("init"), or
        the previous training stage ("")."""
        if section.start == "init":
            return self.initial
        return self.trained[section.start] if section.start else previous


def report_skips(skip_log: SkipLog, stage: str) -> None:
    """Log the examples left out so far, by reason, when there are any."""
    if skip_log.counts:
        logging.warning("[%s] %s so far under data.on_bad_input=skip (each in %s)", stage,
                        skip_log.summary(), skip_log.path)


class NotWritable(UserError):
    """A directory the run must write in that cannot be written."""


def require_writable(directory: pathlib.Path, name: str, fix: str) -> None:
    """Create `directory` and write a file there; NotWritable naming `name`, with `fix`, if not."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as error:
        raise NotWritable(f"{name} {directory}: cannot write there ({error.strerror or error}); "
                          f"{fix}") from error


def run_experiment(cfg: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
    """Run every stage of `cfg.stages` in order; returns the evaluation results (results.json).

    A training stage starts where `Experiment.start_params` says and saves <workdir>/<stage>/params
    (the base's in its cache); a finished stage is loaded, not rerun. Raises ConfigError or
    NotWritable before anything runs; EmptySplit for a used split with no usable row;
    WorkdirLocked when another run holds <workdir>/.lock; Preempted on SIGTERM / SIGINT, after a
    training stage saves its checkpoint or before another phase's next item (`train.preemption`).
    """
    validate_config(cfg)
    require_writable(workdir, "work directory", "give --workdir a directory you can write")
    require_writable(default_cache_dir(), "cache", "set SALLM_JAX_CACHE to a directory you can "
                     "write")
    initialize_distributed(cfg.parallel)
    lock = WorkdirLock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
    with lock, StopSignal():
        return _run_stages(cfg, workdir)


def _run_stages(cfg: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
    """`run_experiment`'s stages, under its lock."""
    enable_compilation_cache()
    if jax.process_index() == 0:
        (workdir / "config.json").write_text(cfg.to_json_best_effort(indent=2))
    run = Experiment(cfg, workdir)
    if jax.process_index() == 0:
        print(run.summary(), flush=True)
    params, results = run.initial, {}
    for name in cfg.stages:
        stop_before(name)
        stage = STAGES[name]
        if not stage.trains:
            results = stage.run(run)
        else:
            params = stage.run(run, name, run.start_params(cfg[name], params))
            run.trained[name] = params
        report_skips(run.skip_log, name)
    if results and jax.process_index() == 0:
        write_atomically(workdir / "results.json", json.dumps(results, indent=2))
        print(format_table(results), flush=True)
    if jax.process_index() == 0:  # plots/ and report.md; a failure is only a warning
        write_report_or_warn(workdir)
    return results
