"""Runs a config's stages (sft -> grpo -> eval) in a work directory, resuming where it stopped.

Work directory layout:
  config.json               the resolved config
  tokenizer/                the tokenizer (trained on the embedded corpus when none is given)
  <stage>/checkpoints/      Orbax checkpoints of a training stage (state + data iterator)
  <stage>/params/           the stage's final parameters; their presence marks the stage done
  <stage>/metrics.jsonl     training scalars; <stage>/tensorboard/ event files
  eval/<stage>/<split>/     predictions.jsonl and metrics.json
  results.json              {"sft": {"test": {"bleu": ...}}, "grpo": {...}}
"""

from __future__ import annotations

import functools
import json
import logging
import os
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx
from jax.experimental import multihost_utils

from sallm_jax.data.bad_input import SkipLog
from sallm_jax.data.embedded_aqa import build_embedded_aqa
from sallm_jax.data.embedded_ast import build_embedded_ast
from sallm_jax.data.embedded_sqa import build_embedded_sqa, embedded_corpus_texts
from sallm_jax.data.manifest import ManifestRow, read_manifest
from sallm_jax.data.pipeline import BatchSpec
from sallm_jax.data.tokenizer import load_tokenizer, train_tokenizer
from sallm_jax.eval.evaluate import evaluate
from sallm_jax.models.audio_tokens import num_audio_tokens
from sallm_jax.models.config import AudioEncoderConfig, SpeechLMConfig, TextConfig
from sallm_jax.models.hf_weights import load_checkpoint
from sallm_jax.models.lora import apply_lora, lora_modules, trainable_filter
from sallm_jax.models.remat import set_remat
from sallm_jax.models.speech_lm import SpeechLM
from sallm_jax.parallel.distributed import initialize as initialize_distributed
from sallm_jax.parallel.mesh import make_mesh
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.parallel.sharding import data_parallel_size
from sallm_jax.rl.rollout import SamplingConfig
from sallm_jax.train.grpo import run_grpo
from sallm_jax.train.sft import run_sft
from sallm_jax.validate import require, validate_config

SPLITS = ("train", "validation", "test")
TRAINING_STAGES = ("sft", "grpo")


def default_cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("SALLM_JAX_CACHE", "~/.cache/sallm_jax")).expanduser()


def first_process_then_rest(name: str, fn):
    """Run `fn` on process 0, then on the others (which then find its cached output)."""
    if jax.process_count() == 1:
        return fn()
    result = fn() if jax.process_index() == 0 else None
    multihost_utils.sync_global_devices(name)
    return fn() if jax.process_index() != 0 else result


EMBEDDED_SETS = {"embedded_sqa": build_embedded_sqa, "embedded_ast": build_embedded_ast,
                 "embedded_aqa": build_embedded_aqa}


def load_splits(cfg: ml_collections.ConfigDict,
                skip_log: SkipLog | None = None) -> dict[str, list[ManifestRow]]:
    """Rows of each split: the configured manifests, or an embedded set (built once, cached).

    The default cache folder of an embedded set is named by its seed and sizes, so runs that
    ask for different builds never replace the files another run is reading.
    """
    if cfg.name in EMBEDDED_SETS:
        build = f"seed{cfg.seed}-{cfg.num_train}-{cfg.num_validation}-{cfg.num_test}"
        root = pathlib.Path(cfg.root).expanduser() if cfg.root else (
            default_cache_dir() / cfg.name / build)
        manifests = first_process_then_rest("data", lambda: EMBEDDED_SETS[cfg.name](
            root, seed=cfg.seed, num_train=cfg.num_train, num_validation=cfg.num_validation,
            num_test=cfg.num_test))
    elif cfg.name == "manifest":
        manifests = {s: cfg[f"{s}_manifest"] for s in SPLITS if cfg[f"{s}_manifest"]}
    else:
        raise ValueError(f"data.name: expected 'manifest' or one of {sorted(EMBEDDED_SETS)}, "
                         f"got {cfg.name!r}")
    return {split: read_manifest(path, skip_log) for split, path in manifests.items()}


def prepare_tokenizer(cfg: ml_collections.ConfigDict, splits: dict[str, list[ManifestRow]],
                      workdir: pathlib.Path):
    """The configured tokenizer, or one trained on the training text and kept in the workdir."""
    if cfg.tokenizer.path:
        return load_tokenizer(pathlib.Path(cfg.tokenizer.path).expanduser())
    out = workdir / "tokenizer"

    def load_or_train():
        if (out / "tokenizer.json").exists():
            return load_tokenizer(out)
        return train_tokenizer(embedded_corpus_texts(splits["train"]), out,
                               vocab_size=cfg.tokenizer.vocab_size)

    return first_process_then_rest("tokenizer", load_or_train)


def build_model(cfg: ml_collections.ConfigDict, splits: dict[str, list[ManifestRow]],
                workdir: pathlib.Path):
    """(model, tokenizer): a local Hugging Face checkpoint (model.checkpoint) with its own
    tokenizer, or a new model of the configured sizes; LoRA adapters added when lora.rank > 0."""
    if cfg.model.checkpoint:
        checkpoint = load_checkpoint(pathlib.Path(cfg.model.checkpoint).expanduser(),
                                     dtype=cfg.model.dtype,
                                     adapter_dir=cfg.lora.adapter_dir or None)
        model, tokenizer = checkpoint.model, checkpoint.tokenizer
        if cfg.tokenizer.path or tokenizer is None:
            tokenizer = prepare_tokenizer(cfg, splits, workdir)
    else:
        tokenizer = prepare_tokenizer(cfg, splits, workdir)
        dtype = jnp.dtype(cfg.model.dtype)  # log-probs and losses stay float32 regardless
        model = SpeechLM(model_config(cfg, tokenizer), rngs=nnx.Rngs(cfg.seed), dtype=dtype,
                         param_dtype=dtype)
    set_remat(model, cfg.model.remat)
    if cfg.lora.rank and not any(True for _ in lora_modules(model)):
        apply_lora(model, rank=cfg.lora.rank, alpha=cfg.lora.alpha,
                   target_modules=tuple(cfg.lora.target_modules), rngs=nnx.Rngs(cfg.seed))
    return model, tokenizer


def model_config(cfg: ml_collections.ConfigDict, tokenizer) -> SpeechLMConfig:
    """The configured sizes, with the tokenizer's vocabulary and audio token."""
    return SpeechLMConfig(audio=AudioEncoderConfig(**cfg.model.audio.to_dict()),
                          text=TextConfig(**cfg.model.text.to_dict(), vocab_size=len(tokenizer)),
                          audio_token_id=tokenizer.convert_tokens_to_ids("<|AUDIO|>"))


def batch_spec(cfg: ml_collections.ConfigDict, model: SpeechLMConfig, key: str,
               max_target_tokens: int, partitioner: Partitioner | None = None) -> BatchSpec:
    """Shapes of this process's batches for the global batch size at config key `key`."""
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


def save_params(directory: pathlib.Path, params: nnx.State) -> None:
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory.absolute(), params)


def restore_params(directory: pathlib.Path, like: nnx.State,
                   partitioner: Partitioner) -> nnx.State:
    """Parameters saved by `save_params`, restored straight into the mesh layout."""
    target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          like, partitioner.param_shardings(like))
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(directory.absolute(), target)


def format_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """A plain-text table: one row per (stage, split), one column per metric."""
    names = ["bleu", "chrf", "rouge_l"]
    lines = [f"{'stage':<8}{'split':<12}" + "".join(f"{n:>10}" for n in names)]
    for stage, by_split in results.items():
        for split, metrics in by_split.items():
            lines.append(f"{stage:<8}{split:<12}" + "".join(f"{metrics[n]:>10.2f}" for n in names))
    return "\n".join(lines)


def enable_compilation_cache() -> None:
    """Keep compiled programs on disk: a resumed run, and the evaluation of each stage's weights
    (same program, other parameters), then skip recompiling."""
    jax.config.update("jax_compilation_cache_dir", str(default_cache_dir() / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def run_experiment(cfg: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
    """Run every stage of `cfg.stages` in order; returns the evaluation results."""
    validate_config(cfg)
    initialize_distributed(cfg.parallel)
    partitioner = Partitioner(make_mesh(cfg.parallel.mesh), tuple(map(tuple, cfg.parallel.rules)))
    workdir.mkdir(parents=True, exist_ok=True)
    enable_compilation_cache()
    if jax.process_index() == 0:
        (workdir / "config.json").write_text(cfg.to_json_best_effort(indent=2))
    skip_log = SkipLog(cfg.data.on_bad_input, workdir / "skipped.jsonl")
    splits = load_splits(cfg.data, skip_log)
    model, tokenizer = build_model(cfg, splits, workdir)
    mcfg = model.config
    lora_reference = bool(cfg.lora.rank) and cfg.lora.trainable == "adapters"
    graphdef, params, frozen = nnx.split(
        model, trainable_filter(cfg.lora.trainable) if cfg.lora.rank else nnx.Param, ...)
    logging.info("model: %d trainable parameters, %d frozen values",
                 sum(x.size for x in jax.tree.leaves(params)),
                 sum(x.size for x in jax.tree.leaves(frozen)))
    trained: dict[str, nnx.State] = {}
    if cfg.init_params:
        params = restore_params(pathlib.Path(cfg.init_params).expanduser(), params, partitioner)
    results: dict[str, dict[str, dict[str, float]]] = {}
    eval_sampling = SamplingConfig(max_new_tokens=cfg.eval.max_new_tokens,
                                   temperature=cfg.eval.temperature, top_k=cfg.eval.top_k,
                                   top_p=cfg.eval.top_p)
    eval_spec = batch_spec(cfg, mcfg, "eval.batch_size", cfg.eval.max_new_tokens, partitioner)
    for stage in cfg.stages:
        stage_dir = workdir / stage
        if stage in TRAINING_STAGES and (stage_dir / "params").exists():
            logging.info("[%s] already finished; loading its parameters", stage)
            params = restore_params(stage_dir / "params", params, partitioner)
        elif stage == "sft":
            params = run_sft(cfg.sft, graphdef=graphdef, params=params, frozen=frozen,
                             rows=splits["train"],
                             tokenizer=tokenizer,
                             spec=batch_spec(cfg, mcfg, "sft.batch_size",
                                             cfg.sft.max_target_tokens, partitioner),
                             workdir=stage_dir, seed=cfg.seed,
                             partitioner=partitioner, skip_log=skip_log,
                             num_workers=cfg.data.num_workers)
        elif stage == "grpo":
            # LoRA on a frozen base: the reference is the policy with adapters off, no copy.
            validate = None
            if cfg.rl.eval_every and "validation" in splits:
                def validate(candidate, frozen=frozen):
                    metrics = evaluate(graphdef, candidate, frozen, splits["validation"],
                                       tokenizer, eval_spec, eval_sampling,
                                       partitioner=partitioner, seed=cfg.seed,
                                       skip_log=skip_log)
                    return metrics[cfg.rl.select_on]
            params = run_grpo(cfg.rl, graphdef=graphdef, params=params, frozen=frozen,
                              validate=validate,
                              ref_params=None if lora_reference else params,
                              rows=splits["train"], tokenizer=tokenizer,
                              spec=batch_spec(cfg, mcfg, "rl.batch_size",
                                              cfg.rl.max_completion_length, partitioner),
                              workdir=stage_dir, seed=cfg.seed,
                              partitioner=partitioner, skip_log=skip_log,
                              num_workers=cfg.data.num_workers)
        elif stage == "eval":
            for name, stage_params in trained.items():
                for split in cfg.eval.splits:
                    results.setdefault(name, {})[split] = evaluate(
                        graphdef, stage_params, frozen, splits[split], tokenizer, eval_spec,
                        eval_sampling,
                        partitioner=partitioner, out_dir=workdir / "eval" / name / split,
                        seed=cfg.seed, skip_log=skip_log)
            continue
        else:
            raise ValueError(f"stages: unknown stage {stage!r}; expected sft, grpo or eval")
        if not (stage_dir / "params").exists():
            save_params(stage_dir / "params", params)
        trained[stage] = params
    if results and jax.process_index() == 0:
        (workdir / "results.json").write_text(json.dumps(results, indent=2))
        print(format_table(results), flush=True)
    return results
