"""What the embedded data sets (spoken QA, En->De translation, audio multiple choice, ASR) share.

Slot vocabularies and speakers, the split plan, eSpeak NG clip synthesis, `EmbeddedSet` (named in
`embedded_sets`) with its atomic cached build, and the tokenizer corpus. Under a set's `root`:
  build.json                      parameters + format version; written last, marks a full build
  {train,validation,test}.jsonl   manifests (see `sallm_jax.data.manifest`)
  audio/{split}/{passage_id}.wav  16 kHz mono PCM-16, shared by the rows of its passage
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import soundfile
import soxr

from sallm_jax.data.manifest import ManifestRow, write_manifest
from sallm_jax.data.prompts import target_text, user_text
from sallm_jax.data.speech_synth import Speaker, synthesize
from sallm_jax.runtime.progress import track
from sallm_jax.runtime.stop_signal import check

SAMPLE_RATE = 16000
SPLITS = ("train", "validation", "test")

# Slot vocabularies: small enough for a tiny model to learn each word from the audio.
NAMES = {  # name -> subject pronoun, for two-sentence passages
    "Maria": "She", "Omar": "He", "Lucy": "She", "Daniel": "He", "Priya": "She", "Tom": "He",
    "Sofia": "She", "Ken": "He", "Emma": "She", "Ravi": "He", "Nina": "She", "Paul": "He",
    "Grace": "She", "Leo": "He",
}  # fmt: skip
NUMBERS = (
    "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "twenty",
)  # fmt: skip
OBJECTS = (
    "apples", "books", "chairs", "letters", "cups", "boxes", "flowers", "pencils", "shirts",
    "lamps", "bottles", "tickets", "plates", "keys",
)  # fmt: skip
PLACES = (
    "library", "market", "school", "station", "garden", "museum", "hospital", "bakery", "office",
    "park", "beach", "kitchen", "harbour", "theatre",
)  # fmt: skip
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
TIMES = (
    "in the morning", "in the afternoon", "in the evening", "at night", "at noon", "at midnight",
    "at dawn", "at dusk", "before lunch", "after dinner", "after work", "before breakfast",
)  # fmt: skip
VERBS = {"took": "take", "brought": "bring", "carried": "carry", "sent": "send"}  # past -> base

# Six voices (accent, male/female variant) at 160..220 words per minute; the two-sentence
# passages run ~4 s at the slowest rate, which bounds the audio-token count.
SPEAKERS = (
    Speaker("en-us", rate=175, pitch=50),
    Speaker("en-gb", rate=160, pitch=40),
    Speaker("en-us+f3", rate=190, pitch=65),
    Speaker("en-gb+m3", rate=165, pitch=35),
    Speaker("en-us+f2", rate=210, pitch=70),
    Speaker("en-gb-scotland+m1", rate=220, pitch=45),
)

# One passage text in EVALUATION_SHARE is reserved for evaluation: the validation and test splits
# of every embedded set draw only from that pool, and training splits (the base model's
# pretraining corpus included) never do, so no stage ever trains on a passage that is evaluated.
EVALUATION_SHARE = 5

# A generator that keeps drawing passages already used has run out of distinct ones.
_MAX_REPEATED_DRAWS = 10_000

Item = TypeVar("Item")


@dataclasses.dataclass(frozen=True)
class Clip:
    """What one audio file holds: `text` read by `speaker`."""

    text: str
    speaker: Speaker


@dataclasses.dataclass(frozen=True)
class SynthesisedClip:
    """A clip written to disk: its passage id, absolute wav path and the meta its rows share."""

    passage_id: str
    audio: str
    meta: dict[str, Any]


# draw(rng, rows_still_needed) -> (clip, item, rows the item adds); a clip's text is its identity.
Draw = Callable[[random.Random, int], tuple[Clip, Item, int]]
# to_rows(item, clip on disk) -> the item's manifest rows.
ToRows = Callable[[Item, SynthesisedClip], list[ManifestRow]]


def speaker_name(speaker: Speaker) -> str:
    return f"{speaker.voice}/{speaker.rate}wpm/pitch{speaker.pitch}"


def held_out(text: str) -> bool:
    """Whether the passage `text` belongs to the evaluation pool (a fixed fifth of all texts)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") % EVALUATION_SHARE == 0


def plan_splits(
    seed: int, sizes: Mapping[str, int], draw: Draw
) -> dict[str, list[tuple[Clip, Item]]]:
    """(clip, item) pairs per split with `sizes[split]` rows each, no clip text used twice.

    Validation and test texts are `held_out`, train texts never; test is drawn first, so a seed's
    evaluation sets do not depend on `num_train`. ValueError if distinct passages run out.
    """
    rng = random.Random(seed)
    seen: set[str] = set()
    plan: dict[str, list[tuple[Clip, Item]]] = {}
    for split in ("test", "validation", "train"):
        plan[split], remaining, repeats = [], sizes[split], 0
        while remaining > 0:
            clip, item, rows = draw(rng, remaining)
            if held_out(clip.text) != (split != "train"):
                continue
            if clip.text in seen:
                repeats += 1
                if repeats > _MAX_REPEATED_DRAWS:
                    raise ValueError(
                        f"only {len(seen)} distinct passages could be drawn; sizes {dict(sizes)} "
                        "ask for more (lower num_train/num_validation/num_test)"
                    )
                continue
            seen.add(clip.text)
            repeats = 0
            plan[split].append((clip, item))
            remaining -= rows
    return plan


def write_clip(path: Path, text: str, speaker: Speaker, seed: int) -> float:
    """Synthesise `text` to a 16 kHz PCM-16 wav at `path`; returns its duration in seconds."""
    waveform, rate = synthesize(text, speaker, seed=seed)
    waveform = soxr.resample(waveform, rate, SAMPLE_RATE, quality="HQ")
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, np.clip(waveform, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
    return waveform.shape[0] / SAMPLE_RATE


def _build_into(
    directory: Path, plan: Mapping[str, list[tuple[Clip, Item]]], to_rows: ToRows, dataset: str
) -> None:
    """Synthesise every clip of `plan`, one progress ("synth <dataset>") over all splits."""
    clips = [(split, index, clip, item)
             for split in SPLITS for index, (clip, item) in enumerate(plan[split])]
    rows: dict[str, list[ManifestRow]] = {split: [] for split in SPLITS}
    for split, index, clip, item in track(clips, f"synth {dataset}", len(clips), unit="clip"):
        check(f"synth {dataset}")  # a stop signal: the caller removes the staging folder
        passage_id = f"{split}-{index:05d}"
        audio = directory / "audio" / split / f"{passage_id}.wav"
        duration = write_clip(audio, clip.text, clip.speaker, seed=index)
        meta = {
            "passage": clip.text,
            "passage_id": passage_id,
            "speaker": speaker_name(clip.speaker),
            "audio_seconds": round(duration, 4),
        }
        rows[split] += to_rows(item, SynthesisedClip(passage_id, str(audio), meta))
    for split in SPLITS:
        write_manifest(directory / f"{split}.jsonl", rows[split])


@dataclasses.dataclass(frozen=True)
class EmbeddedSet:
    """One embedded data set: how its clips are drawn and written as rows, and its default sizes.

    `dataset`: its name in build.json and the synthesis progress ("sqa"); `format_version`: raised
    whenever the same parameters would build other files; `draw`, `to_rows`: see `Draw`, `ToRows`;
    `sizes`: default manifest rows per split; `base_corpus`: the base stage's own corpus, which
    `data.name` cannot name.
    """

    dataset: str
    format_version: int
    draw: Draw
    to_rows: ToRows
    sizes: Mapping[str, int]
    base_corpus: bool = False

    @property
    def name(self) -> str:
        """The set's key in `embedded_sets.EMBEDDED_SETS` and its `data.name`."""
        return f"embedded_{self.dataset}"

    def build(self, root: str | os.PathLike, *, seed: int = 0, num_train: int | None = None,
              num_validation: int | None = None, num_test: int | None = None
              ) -> dict[str, Path]:
        """`build_embedded` of this set under `root`; a size left None takes `sizes`' default."""
        given = {"train": num_train, "validation": num_validation, "test": num_test}
        sizes = {split: self.sizes[split] if n is None else n for split, n in given.items()}
        return build_embedded(self, root, seed=seed, sizes=sizes)


def build_embedded(
    embedded: EmbeddedSet, root: str | os.PathLike, *, seed: int, sizes: Mapping[str, int]
) -> dict[str, Path]:
    """Build (or reuse) the set under `root`; {split: manifest path} for train, validation, test.

    `sizes` count manifest rows (ValueError if < 1). A build whose `root/build.json` records the
    same parameters and format version is reused; a new one is staged beside `root` and renamed
    into place; a stop signal ends it before the next clip (`stop_signal.Preempted`). A folder
    holding another set, or anything without build.json, raises FileExistsError. The same seed
    gives the same files, byte for byte.
    """
    root, dataset = Path(root), embedded.dataset
    for split, size in sizes.items():
        if size < 1:
            raise ValueError(f"{embedded.name}: num_{split} must be >= 1, got {size}")
    params = {
        "dataset": dataset,
        "format_version": embedded.format_version,
        "seed": seed,
        "sample_rate": SAMPLE_RATE,
        **sizes,
    }
    manifests = {split: root / f"{split}.jsonl" for split in SPLITS}
    build_file = root / "build.json"
    if build_file.exists():
        recorded = json.loads(build_file.read_text())
        if recorded == params and all(path.exists() for path in manifests.values()):
            return manifests
        if recorded.get("dataset", dataset) != dataset:
            raise FileExistsError(
                f"{build_file}: holds the embedded {recorded['dataset']!r} set; refusing to "
                f"replace it with the embedded {dataset!r} set (choose another folder)"
            )
    elif root.exists() and any(root.iterdir()):
        raise FileExistsError(
            f"{root}: not empty and holds no build.json; refusing to replace it with the "
            f"embedded {dataset!r} set (choose an empty or new folder)"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.building-", dir=root.parent))
    try:
        _build_into(staging, plan_splits(seed, sizes, embedded.draw), embedded.to_rows,
                    dataset)
        # build.json last: its presence means the manifests and audio are complete.
        (staging / "build.json").write_text(json.dumps(params, indent=2) + "\n")
        if root.exists():
            stale = Path(tempfile.mkdtemp(prefix=f".{root.name}.stale-", dir=root.parent))
            os.replace(root, stale / "old")
            shutil.rmtree(stale)
        os.replace(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifests


def embedded_corpus_texts(rows: Iterable[ManifestRow]) -> Iterator[str]:
    """Every text a tokenizer for these rows should see, whatever their task.

    Each passage once, then per row its question, answer, `user_text` and `target_text`.
    """
    seen_passages: set[str] = set()
    for row in rows:
        passage = row.meta.get("passage")
        if passage is not None and passage not in seen_passages:
            seen_passages.add(passage)
            yield passage
        # dict.fromkeys: where the prompt is the bare field (SQA), yield it once, in order.
        yield from dict.fromkeys((row.question, row.answer, user_text(row), target_text(row)))
