"""grain input pipeline: manifest rows -> padded, length-bucketed batches of audio prompts.

A batch holds one audio-length bucket: waveforms zero-padded to its duration, `ChatFormat`
prompts left-padded to its audio tokens + `max_prompt_text_tokens`, targets (answer + end of turn)
right-padded to `max_target_tokens`. Training batches follow a seeded plan (iterator state: one
position), loaded by threads or `num_workers` processes; log-mel features are made in the jitted
step (`SpeechLM.audio_features`). Workers return `bad_input.Skip`s; `SkipLog.absorb` applies the
policy in the main process.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Sequence

import grain
import numpy as np
from absl import flags

from sallm_jax.audio.io import declared_frames, load_audio
from sallm_jax.audio.log_mel import N_FFT
from sallm_jax.data.bad_input import Skip, SkipLog
from sallm_jax.data.chat_format import ChatFormat, ChatFormatError
from sallm_jax.data.manifest import ManifestRow
from sallm_jax.data.prompts import target_text, user_text

SAMPLE_RATE = 16000
TRUNCATION_TOLERANCE = 16  # samples: resampling may round the length by a few
# The arrays of a batch that a jitted step consumes; the rest ("index") is host bookkeeping.
DEVICE_KEYS = ("waveforms", "num_samples", "prompt_ids", "prompt_mask", "target_ids",
               "target_mask", "valid")


@dataclasses.dataclass(frozen=True)
class BatchSpec:
    """Static shapes of the batches (see the module docstring).

    `num_audio_tokens`: a clip's sample count -> its audio placeholders, per model family
    (`functools.partial(sallm_jax.models.families.num_audio_tokens, model_config)`).
    """

    batch_size: int
    audio_buckets_s: tuple[float, ...]
    max_prompt_text_tokens: int
    max_target_tokens: int
    num_audio_tokens: Callable[[int], int]
    truncate_long_audio: bool = False  # cut clips to the largest bucket instead of rejecting

    def bucket_samples(self, bucket: int) -> int:
        return int(round(self.audio_buckets_s[bucket] * SAMPLE_RATE))

    def prompt_length(self, bucket: int) -> int:
        return self.num_audio_tokens(self.bucket_samples(bucket)) + self.max_prompt_text_tokens


def clip_samples(row: ManifestRow) -> int:
    """Samples at 16 kHz the row's clip will have, read from the file header (no decoding)."""
    if row.duration is not None:
        return int(math.ceil(row.duration * SAMPLE_RATE))
    frames, rate = declared_frames(row.audio)
    seconds = frames / rate - (row.offset or 0.0)
    return int(math.ceil(seconds * SAMPLE_RATE))


def screen_rows(rows: Sequence[ManifestRow], spec: BatchSpec,
                skip_log: SkipLog | None = None, chat: ChatFormat | None = None) -> np.ndarray:
    """[num_rows] the smallest bucket holding each row's clip + N_FFT // 2 zeros; -1: left out.

    A missing or non-file audio path, an unreadable header, a clip too short for one audio token
    or too long for the largest bucket, and (given `chat`) a prompt whose text tokens exceed its
    bucket's room go through `skip_log` (default: the "error" policy).
    """
    skip_log = skip_log or SkipLog("error")
    limits = np.array([spec.bucket_samples(b) for b in range(len(spec.audio_buckets_s))])
    buckets = np.full(len(rows), -1, np.int32)
    truncated = 0
    for i, row in enumerate(rows):
        if not os.path.exists(row.audio):
            skip_log.handle(row.id, row.audio, "missing audio file", "no such file")
            continue
        if not os.path.isfile(row.audio):
            skip_log.handle(row.id, row.audio, "audio is not a file",
                            "the path names a directory or a special file")
            continue
        try:
            n = clip_samples(row)
        except ValueError as error:
            skip_log.handle(row.id, row.audio, "unreadable audio", str(error))
            continue
        if n <= 0:
            skip_log.handle(row.id, row.audio, "empty audio", "the clip holds no samples")
            continue
        if spec.num_audio_tokens(n) < 1:
            skip_log.handle(row.id, row.audio, "audio too short",
                            f"{n} samples ({n / SAMPLE_RATE:.3f} s) give the model no audio "
                            "token")
            continue
        fits = np.nonzero(limits >= n + N_FFT // 2)[0]
        if fits.size == 0 and spec.truncate_long_audio:
            truncated += 1
            buckets[i] = len(limits) - 1
            continue
        if fits.size == 0:
            skip_log.handle(row.id, row.audio, "audio too long",
                            f"{n / SAMPLE_RATE:.2f} s does not fit the largest bucket in "
                            f"data.audio_buckets_s ({spec.audio_buckets_s[-1]} s)")
            continue
        if chat is not None:
            # The prompt fits when its text fills no more than the bucket's prompt width less
            # the clip's own audio tokens (a clip shorter than its bucket leaves some over).
            room = spec.prompt_length(int(fits[0])) - spec.num_audio_tokens(n)
            if (count := prompt_text_tokens(row, chat)) > room:
                skip_log.handle(row.id, row.audio, "prompt too long",
                                f"{count} text tokens; its bucket has room for {room} "
                                f"(data.max_prompt_text_tokens={spec.max_prompt_text_tokens})")
                continue
        buckets[i] = fits[0]
    if truncated:
        logging.warning("%d clips are longer than the largest bucket (%.1f s) and will be "
                        "truncated to it (data.truncate_long_audio)", truncated,
                        spec.audio_buckets_s[-1])
    return buckets


def plan_epoch(buckets: np.ndarray, batch_size: int, rng: np.random.Generator | None,
               drop_remainder: bool) -> list[np.ndarray]:
    """Index batches for one pass: same-bucket batches, shuffled when `rng` is given.

    Bucket -1 rows take no part; `drop_remainder` leaves out each bucket's incomplete last batch.
    """
    order = rng.permutation(len(buckets)) if rng is not None else np.arange(len(buckets))
    batches = []
    for b in np.unique(buckets[buckets >= 0]):
        members = order[buckets[order] == b]
        stop = len(members) - len(members) % batch_size if drop_remainder else len(members)
        batches += [members[i : i + batch_size] for i in range(0, stop, batch_size)]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def local_share(global_batch: np.ndarray, process_index: int, process_count: int) -> np.ndarray:
    """This process's contiguous slice of a global batch (possibly short or empty at the end)."""
    size = -(-len(global_batch) // process_count)
    return global_batch[process_index * size : (process_index + 1) * size]


def plan_training(buckets: np.ndarray, batch_size: int, num_batches: int, seed: int,
                  process_index: int = 0, process_count: int = 1) -> list[np.ndarray]:
    """Enough shuffled epochs for `num_batches` steps of `batch_size` rows on this process.

    Every process plans the same global batches (batch_size x process_count rows of one bucket)
    and takes its slice. Raises ValueError if the global batch is larger than every bucket.
    """
    plan: list[np.ndarray] = []
    epoch = 0
    global_size = batch_size * process_count
    while len(plan) < num_batches:
        epoch_batches = plan_epoch(buckets, global_size, np.random.default_rng((seed, epoch)),
                                   drop_remainder=True)
        if not epoch_batches:
            raise ValueError(f"the global batch ({global_size} rows) is larger than every bucket "
                             f"of {len(buckets)} examples")
        plan += [local_share(b, process_index, process_count) for b in epoch_batches]
        epoch += 1
    return plan[:num_batches]


def prompt_ids(row: ManifestRow, chat: ChatFormat, num_audio_tokens: int) -> list[int]:
    """The row's prompt ids, holding exactly one audio-token id per audio embedding of its clip.

    Raises ChatFormatError naming the row otherwise, whatever the skip policy.
    """
    where = f"example {row.id!r} ({row.audio})"
    try:
        ids = chat.prompt_ids(user_text(row), num_audio_tokens)
    except ChatFormatError as error:
        raise ChatFormatError(f"{where}: {error}") from None
    if (found := sum(1 for i in ids if i == chat.audio_token_id)) != num_audio_tokens:
        raise ChatFormatError(
            f"{where}: its prompt holds {found} audio-token ids ({chat.audio_token!r} = "
            f"{chat.audio_token_id}) but the model makes {num_audio_tokens} audio embeddings "
            "for its clip")
    return ids


def prompt_text_tokens(row: ManifestRow, chat: ChatFormat) -> int:
    """Text tokens of the row's prompt, its audio tokens not counted."""
    return len(prompt_ids(row, chat, 1)) - 1


class BatchLoader:
    """Row indices -> padded numpy arrays and the `Skip`s met (a grain map transform).

    Applies no policy (it runs in input workers): `SkipLog.absorb` does, in the main process.
    """

    def __init__(self, rows: Sequence[ManifestRow], buckets: np.ndarray, chat: ChatFormat,
                 spec: BatchSpec):
        self.rows, self.buckets, self.chat, self.spec = rows, buckets, chat, spec
        self.pad_id = chat.pad_id

    def __call__(self, indices: np.ndarray,
                 like: int | None = None) -> tuple[dict[str, np.ndarray], tuple[Skip, ...]]:
        """Arrays for `indices` and the skips met.

        Empty `indices` give an all-invalid batch in row `like`'s bucket (a process past the end
        of an evaluation split still joins each step).
        """
        if not len(indices):
            batch, _ = self(np.array([like]))
            batch["valid"][:] = False
            return batch, ()
        spec, size = self.spec, self.spec.batch_size
        bucket = int(self.buckets[indices[0]])
        width, prompt_len = spec.bucket_samples(bucket), spec.prompt_length(bucket)
        out = {
            "waveforms": np.zeros((size, width), np.float32),
            "num_samples": np.zeros((size,), np.int32),
            "prompt_ids": np.full((size, prompt_len), self.pad_id, np.int32),
            "prompt_mask": np.zeros((size, prompt_len), np.int32),
            "target_ids": np.full((size, spec.max_target_tokens), self.pad_id, np.int32),
            "target_mask": np.zeros((size, spec.max_target_tokens), np.int32),
            "index": np.full((size,), -1, np.int32),
            "valid": np.zeros((size,), bool),
        }
        # A short final batch is filled by repeating its first example, marked invalid.
        slots = list(indices) + [indices[0]] * (size - len(indices))
        skips = []
        for slot, i in enumerate(slots):
            out["index"][slot] = i
            if slot >= len(indices):
                continue
            skip = self._fill(out, slot, self.rows[i], width, prompt_len)
            out["valid"][slot] = skip is None
            if skip is not None:
                skips.append(skip)
        return out, tuple(skips)

    def _fill(self, out, slot: int, row: ManifestRow, width: int,
              prompt_len: int) -> Skip | None:
        """Write one example into `slot`; the reason it was left out, or None when written."""
        try:
            wave = load_audio(row.audio, SAMPLE_RATE, offset=row.offset, duration=row.duration)
        except ValueError as error:
            return Skip(row.id, row.audio, "unreadable audio", str(error))
        # libsndfile returns what is there when a file ends early: compare with the header.
        expected = clip_samples(row)
        if len(wave) < expected - TRUNCATION_TOLERANCE:
            return Skip(row.id, row.audio, "truncated audio",
                        f"decoded {len(wave)} samples, the header promises {expected}")
        if len(wave) + N_FFT // 2 > width and self.spec.truncate_long_audio:
            wave = wave[: width - N_FFT // 2]  # counted and logged by screen_rows
        if len(wave) + N_FFT // 2 > width:
            return Skip(row.id, row.audio, "audio longer than its header says",
                        f"decoded {len(wave)} samples, more than its bucket's {width} "
                        f"less {N_FFT // 2} samples of padding")
        n_audio = self.spec.num_audio_tokens(len(wave))
        prompt = prompt_ids(row, self.chat, n_audio)
        if len(prompt) > prompt_len:  # screen_rows leaves such rows out; this is a backstop
            return Skip(row.id, row.audio, "prompt too long",
                        f"{len(prompt) - n_audio} text tokens, more than "
                        f"data.max_prompt_text_tokens={self.spec.max_prompt_text_tokens}")
        out["waveforms"][slot, : len(wave)] = wave
        out["num_samples"][slot] = len(wave)
        out["prompt_ids"][slot, prompt_len - len(prompt) :] = prompt
        out["prompt_mask"][slot, prompt_len - len(prompt) :] = 1
        target = self.chat.target_ids(target_text(row))[: self.spec.max_target_tokens]
        out["target_ids"][slot, : len(target)] = target
        out["target_mask"][slot, : len(target)] = 1
        return None


def training_dataset(rows: Sequence[ManifestRow], chat: ChatFormat, spec: BatchSpec, *,
                     num_batches: int, seed: int, process_index: int = 0,
                     process_count: int = 1, skip_log: SkipLog | None = None,
                     num_workers: int = 0) -> grain.IterDataset:
    """Shuffled, bucketed training batches for `num_batches` steps, alike for any `num_workers`."""
    skip_log = skip_log or SkipLog("error")
    buckets = screen_rows(rows, spec, skip_log, chat)
    plan = plan_training(buckets, spec.batch_size, num_batches, seed, process_index,
                         process_count)
    ds = grain.MapDataset.source(plan).map(BatchLoader(rows, buckets, chat, spec))
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))
    if num_workers > 0:
        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags: defaults outside main
            flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers,
                                                         per_worker_buffer_size=2))
    return ds.map(skip_log.absorb)


def evaluation_batches(rows: Sequence[ManifestRow], chat: ChatFormat, spec: BatchSpec, *,
                       process_index: int = 0, process_count: int = 1,
                       skip_log: SkipLog | None = None) -> grain.MapDataset:
    """Every usable row once, in bucket order, this process's share; padding marked by "valid"."""
    skip_log = skip_log or SkipLog("error")
    buckets = screen_rows(rows, spec, skip_log, chat)
    plan = plan_epoch(buckets, spec.batch_size * process_count, None, drop_remainder=False)
    items = [(local_share(b, process_index, process_count), int(b[0])) for b in plan]
    loader = BatchLoader(rows, buckets, chat, spec)
    return grain.MapDataset.source(items).map(lambda item: skip_log.absorb(loader(*item)))
