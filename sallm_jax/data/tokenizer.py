"""A small byte-level BPE tokenizer with the Qwen2-Audio special tokens and chat template.

Tiny models need a vocabulary sized to their corpus, not Qwen's 151k entries. It is trained with
`tokenizers` and wrapped as a `transformers` fast tokenizer, used like a Hub checkpoint's.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import tokenizers
import transformers
from tokenizers import decoders, models, pre_tokenizers, trainers

from sallm_jax.runtime.stop_signal import check

PAD_TOKEN = "<|endoftext|>"
EOS_TOKEN = "<|im_end|>"
AUDIO_TOKEN = "<|AUDIO|>"
SPECIAL_TOKENS = (
    PAD_TOKEN,
    "<|im_start|>",
    EOS_TOKEN,
    AUDIO_TOKEN,
    "<|audio_bos|>",
    "<|audio_eos|>",
)
SYSTEM_PROMPT = "You are a helpful assistant."

# Qwen2-Audio-7B-Instruct's template, restated for content parts typed {"type": "audio"} /
# {"type": "text", "text": ...} (the Hub template tests for an "audio" or "audio_url" key; both
# forms are accepted here). Each audio part becomes one <|AUDIO|> placeholder; the caller expands
# it to the clip's audio-token count (see `sallm_jax.data.prompts`).
CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\n" + SYSTEM_PROMPT + "<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'audio' or 'audio' in part or 'audio_url' in part %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in part %}"
    "{{ part['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "<|im_start|>assistant\n"
    "{% endif %}"
)

# The template's fixed text, without special tokens, repeated so that BPE learns it as a few merges
# and every prompt spends few tokens on boilerplate.
_TEMPLATE_TEXT = ("system\n" + SYSTEM_PROMPT + "\n", "user\nAudio 1: \n", "assistant\n")
_TEMPLATE_REPEATS = 200


def _training_texts(texts: Iterable[str]) -> Iterator[str]:
    """The template's text, then `texts`; raises `stop_signal.Preempted` on a stop signal."""
    for _ in range(_TEMPLATE_REPEATS):
        yield from _TEMPLATE_TEXT
    for text in texts:
        check("tokenizer")
        yield text


def _with_signals_handled(train: Callable[[], object]) -> None:
    """Run `train` in a thread; re-raise its exception here.

    The main thread waits in Python, where signal handlers run; the Rust trainer would
    otherwise hold it until done, and stop signals would go unseen."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            train()
        except BaseException as error:  # handed to the main thread
            failed.append(error)

    worker = threading.Thread(target=run, name="tokenizer training", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.1)
    if failed:
        raise failed[0]


def train_tokenizer(
    texts: Iterable[str], out_dir: str | os.PathLike, vocab_size: int = 1024
) -> transformers.PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts` and save it to `out_dir`; returns it.

    Ids 0..5 are `SPECIAL_TOKENS` in order (pad = <|endoftext|> = 0, eos = <|im_end|> = 2,
    <|AUDIO|> = 3), then the 256 byte symbols, then the merges: any Unicode text round-trips.
    Saved as tokenizer.json + tokenizer_config.json (with the chat template);
    `load_tokenizer(out_dir)` gives back the same ids.
    """
    logging.info("[tokenizer] training a byte-level BPE of %d tokens for %s", vocab_size, out_dir)
    # GPT-2's pre-tokenisation regex and byte alphabet: every string has an exact encoding.
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    _with_signals_handled(lambda: backend.train_from_iterator(_training_texts(texts),
                                                              trainer=trainer))
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        additional_special_tokens=list(SPECIAL_TOKENS[1:2] + SPECIAL_TOKENS[3:]),
        clean_up_tokenization_spaces=False,
        model_max_length=1 << 20,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    save_atomically(tokenizer, Path(out_dir))
    return tokenizer


def save_atomically(tokenizer: transformers.PreTrainedTokenizerBase, out_dir: Path) -> None:
    """Save into a sibling folder renamed to `out_dir`: a killed save leaves no tokenizer.json."""
    staging = out_dir.with_name(f"{out_dir.name}.saving-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        tokenizer.save_pretrained(staging)
        shutil.rmtree(out_dir, ignore_errors=True)  # what an older, interrupted save left
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # a second Ctrl-C while saving


def load_tokenizer(directory: str | os.PathLike) -> transformers.PreTrainedTokenizerBase:
    """Load a tokenizer saved by `train_tokenizer` (or any local Hub-style tokenizer folder);
    FileNotFoundError when `directory` holds no tokenizer.json."""
    directory = Path(directory)
    if not (directory / "tokenizer.json").exists():
        raise FileNotFoundError(f"{directory / 'tokenizer.json'}: no tokenizer here")
    return transformers.AutoTokenizer.from_pretrained(str(directory), local_files_only=True)


def load_or_train_tokenizer(out_dir: Path, texts: Callable[[], Iterable[str]],
                            vocab_size: int) -> transformers.PreTrainedTokenizerBase:
    """The tokenizer saved in `out_dir`; else (or when unreadable, with a warning) one trained
    on `texts()` and saved there. Training is deterministic: the same tokenizer again."""
    if (out_dir / "tokenizer.json").exists():
        try:
            return load_tokenizer(out_dir)
        except Exception as error:
            logging.warning("the tokenizer in %s cannot be read (%s: %s); training it again",
                            out_dir, type(error).__name__, str(error).splitlines()[0][:200])
    return train_tokenizer(texts(), out_dir, vocab_size=vocab_size)
