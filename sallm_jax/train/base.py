"""Stage "base": a speech LM that hears, trained before any task and cached by its settings.

The papers start from models that already hear (Granite Speech 3.3, Qwen2-Audio-7B-Instruct)
but never saw the task. Here the configured model is trained from random initialisation to
transcribe the embedded ASR corpus (`data.embedded_asr`: no passage of any evaluation split),
with a byte-level BPE tokenizer trained on that corpus and on the embedded sets' kinds of text
(`data.embedded_text`, vocabulary only).

Cache: `$SALLM_JAX_CACHE/base/<key>/`, the key a hash of `base_settings`:
  tokenizer/      the base's tokenizer (`base_tokenizer`)
  train/          the training stage's checkpoints and metrics: an interrupted build resumes
  heldout/        greedy transcripts of the corpus's validation split
  params/         the final parameters
  base.json       settings + held-out WER; written last, marks a full build
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import pathlib
from collections.abc import Callable

import jax
import ml_collections
from flax import nnx

from sallm_jax.data import embedded_asr, embedded_text
from sallm_jax.data.embedded_common import embedded_corpus_texts
from sallm_jax.data.manifest import ManifestRow, read_manifest
from sallm_jax.data.tokenizer import load_or_train_tokenizer
from sallm_jax.runtime.record_files import read_json, write_atomically

# Base settings that change neither the data nor the result.
_BOOKKEEPING = ("checkpoint_every", "log_every", "eval_every", "start", "use_shipped")


# Model settings hashed only when they differ from these defaults, so that the keys of bases
# built before the settings existed stay valid.
_HASHED_WHEN_SET = {"family": "qwen2_audio", "compute_dtype": "", "fused_attention": False,
                    "scan_layers": False}


def default_cache_dir() -> pathlib.Path:
    """The cache root: `$SALLM_JAX_CACHE`, else ~/.cache/sallm_jax."""
    return pathlib.Path(os.environ.get("SALLM_JAX_CACHE", "~/.cache/sallm_jax")).expanduser()


def base_settings(cfg: ml_collections.ConfigDict) -> dict:
    """Everything that decides the base model (what its cache key hashes)."""
    when_set = {k: cfg.model[k] for k, default in _HASHED_WHEN_SET.items()
                if cfg.model[k] != default}
    return {
        "model": {"audio": cfg.model.audio.to_dict(), "text": cfg.model.text.to_dict(),
                  "dtype": cfg.model.dtype, **when_set},
        "tokenizer_vocab_size": cfg.tokenizer.vocab_size,
        "base": {k: v for k, v in cfg.base.to_dict().items() if k not in _BOOKKEEPING},
        "audio_buckets_s": list(cfg.data.audio_buckets_s),
        "corpus_format": embedded_asr.FORMAT_VERSION,
        "tokenizer_text_format": embedded_text.FORMAT_VERSION,
    }


def settings_key(settings: dict) -> str:
    """The first 16 hex digits of the SHA-256 of `settings` as sorted JSON."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def base_directory(cfg: ml_collections.ConfigDict, cache: pathlib.Path) -> pathlib.Path:
    """`cache/base/<settings_key of base_settings>`."""
    return cache / "base" / settings_key(base_settings(cfg))


def build_corpus(cfg: ml_collections.ConfigDict, cache: pathlib.Path) -> dict[str, pathlib.Path]:
    """Manifests of the ASR corpus the base trains on (train) and is scored on (validation)."""
    b = cfg.base
    root = cache / "embedded_asr" / f"seed{b.seed}-{b.num_train}-{b.num_validation}"
    return embedded_asr.EMBEDDED_ASR.build(root, seed=b.seed, num_train=b.num_train,
                                           num_validation=b.num_validation,
                                           num_test=b.num_validation)


# Draws of each embedded set's text generator the tokenizer also learns from.
TOKENIZER_TEXT_DRAWS = 2000


def base_tokenizer(directory: pathlib.Path, train_rows: list[ManifestRow], vocab_size: int,
                   seed: int = 0):
    """The base's tokenizer: loaded, or trained on the corpus text and the embedded sets' kinds
    of text (`data.embedded_text`), and saved (`load_or_train_tokenizer`)."""
    return load_or_train_tokenizer(
        directory / "tokenizer", lambda: itertools.chain(
            embedded_corpus_texts(train_rows),
            embedded_text.embedded_texts(seed, TOKENIZER_TEXT_DRAWS)), vocab_size)


def is_built(directory: pathlib.Path) -> bool:
    """Whether base.json, the build's last file, is there whole."""
    record = read_json(directory / "base.json")
    return isinstance(record, dict) and "heldout_asr" in record


def unmark_built(directory: pathlib.Path) -> None:
    """Remove base.json, so the cache no longer counts as a finished build."""
    if jax.process_index() == 0:
        (directory / "base.json").unlink(missing_ok=True)


def finish_base(directory: pathlib.Path, cfg: ml_collections.ConfigDict, params: nnx.State,
                save_params: Callable[[pathlib.Path, nnx.State], None],
                heldout_metrics: dict[str, float]) -> None:
    """Save the parameters, then base.json (last: it marks the build complete)."""
    if not (directory / "params").exists():
        save_params(directory / "params", params)
    if jax.process_index() == 0:
        record = {"settings": base_settings(cfg), "heldout_asr": heldout_metrics}
        write_atomically(directory / "base.json", json.dumps(record, indent=2) + "\n")
    logging.info("[base] built in %s: held-out WER %.2f", directory, heldout_metrics["wer"])


def read_corpus(manifests: dict[str, pathlib.Path]) -> dict[str, list[ManifestRow]]:
    return {split: read_manifest(path) for split, path in manifests.items()}
