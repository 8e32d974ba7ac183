"""LibriSQA Part I (open spoken QA over LibriSpeech) -> task "sqa" manifests.

Input (huggingface.co/datasets/ZihanZhao/LibriSQA): LibriSQA-PartI/LibriSQA-PartI-train.json
(or ...-training.json) and ...-test.json, JSON arrays or JSON Lines of objects with "question",
"answer", "speech_path" (or another of `AUDIO_FIELDS`: a path under the audio root, maybe
starting "LibriSpeech/", or a bare utterance id such as "1089-134686-0000"; .wav and .flac are
tried both ways), optional "text" (or `TRANSCRIPT_FIELDS`) and "duration" (seconds). Audio:
OpenSLR LibriSpeech train-clean-360 and test-clean as
{audio_root}[/LibriSpeech]/{split}/{speaker}/{chapter}/{id}.flac. Writes train, validation (a
seeded `validation_fraction` of the train clips; the Granite Speech paper holds out 20%), test.

  python -m sallm_jax.data.importers.librisqa --input LibriSQA-PartI --audio_root LibriSpeech \
      --output data/librisqa [--validation_fraction 0.2 --seed 0]
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from pathlib import Path

from sallm_jax.data.importers.common import (
    ImporterError,
    ImportReport,
    add_with_validation,
    as_object,
    base_parser,
    first_existing,
    get_field,
    iter_json_records,
    run_command,
)
from sallm_jax.data.manifest import ManifestRow

TASK = "sqa"
AUDIO_FIELDS = ("speech_path", "audio path", "audio_path", "path", "audio")
TRANSCRIPT_FIELDS = ("text", "transcript", "transcription")
TRAIN_NAMES = ("LibriSQA-PartI-train.json", "LibriSQA-PartI-training.json")
TEST_NAMES = ("LibriSQA-PartI-test.json",)
_UTTERANCE = re.compile(r"^(\d+)-(\d+)-(\d+)$")


class LibriSpeechLocator:
    """Turns a LibriSQA "speech_path" into an absolute path of a file under `root`."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = os.path.abspath(root)
        # Corpus folders are found by listing once; a bare utterance id is then looked up in
        # each of them ({subset}/{speaker}/{chapter}/{id}.flac) without walking the tree.
        bases = [self.root, os.path.join(self.root, "LibriSpeech")]
        self._subsets = [os.path.join(base, name) for base in bases if os.path.isdir(base)
                         for name in sorted(os.listdir(base))
                         if os.path.isdir(os.path.join(base, name))]

    def locate(self, speech_path: str) -> str:
        """The first existing candidate, or the most literal one (for the "not found" message)."""
        given = speech_path.replace("\\", "/").removeprefix("./")
        relative = [given]
        if given.startswith("LibriSpeech/"):
            relative.append(given.removeprefix("LibriSpeech/"))
        else:
            relative.append(f"LibriSpeech/{given}")
        stem, suffix = os.path.splitext(os.path.basename(given))
        match = _UTTERANCE.match(stem)
        if match and "/" not in given and suffix in ("", ".flac", ".wav"):
            speaker, chapter, _ = match.groups()
            relative += [os.path.join(subset, speaker, chapter, stem + ".flac")
                         for subset in self._subsets]
        candidates = []
        for path in relative:
            path = os.path.normpath(os.path.join(self.root, path))
            candidates.append(path)
            base, ext = os.path.splitext(path)
            if ext in (".wav", ".flac"):
                candidates.append(base + (".flac" if ext == ".wav" else ".wav"))
        return first_existing(candidates)


def librisqa_row(record: object, locator: LibriSpeechLocator) -> ManifestRow:
    """One LibriSQA Part I object -> a row (its id is fixed later, once clips are counted).

    meta: "passage_id" (utterance id), "passage" (transcript), as in the embedded SQA set.
    """
    record = as_object(record)
    audio = locator.locate(get_field(record, AUDIO_FIELDS))
    utterance = os.path.splitext(os.path.basename(audio))[0]
    meta: dict = {"passage_id": utterance}
    transcript = get_field(record, TRANSCRIPT_FIELDS, required=False)
    if transcript is not None:
        meta["passage"] = transcript
    duration = get_field(record, ("duration",), (int, float), required=False)
    if duration is not None:
        meta["audio_seconds"] = float(duration)
    return ManifestRow(id=utterance, audio=audio, task=TASK,
                       question=get_field(record, ("question",)),
                       answer=get_field(record, ("answer",)), meta=meta)


def _read(path: Path, locator: LibriSpeechLocator, report: ImportReport
          ) -> list[tuple[str, ManifestRow]]:
    rows = []
    for where, record in iter_json_records(path, report):
        row = report.convert(where, functools.partial(librisqa_row, record, locator))
        if row is not None:
            rows.append((where, row))
    # Ids are "{utterance}-q{k}", k counting the questions about one clip in file order.
    asked: dict[str, int] = {}
    for _, row in rows:
        k = asked.get(row.audio, 0)
        asked[row.audio] = k + 1
        row.id = f"{row.id}-q{k}"
    return rows


def import_librisqa(train_json: str | os.PathLike, test_json: str | os.PathLike | None,
                    audio_root: str | os.PathLike, output_dir: str | os.PathLike, *,
                    validation_fraction: float = 0.2, seed: int = 0, on_missing: str = "error",
                    on_invalid: str = "error") -> ImportReport:
    """Write `output_dir/{train,validation,test}.jsonl` (no test without `test_json`).

    `audio_root`: the LibriSpeech folder (train-clean-360/ and test-clean/, directly or under
    LibriSpeech/). A `validation_fraction` of the train *clips*, with all their questions, goes to
    validation, chosen by `seed`. `on_missing`, `on_invalid`: see `ImportReport`.
    """
    splits = ("train", "validation") + (("test",) if test_json is not None else ())
    report = ImportReport(splits, on_missing=on_missing, on_invalid=on_invalid)
    locator = LibriSpeechLocator(audio_root)
    train = _read(Path(train_json), locator, report)
    add_with_validation(report, train, "train", validation_fraction, seed)
    if test_json is not None:
        for where, row in _read(Path(test_json), locator, report):
            report.add("test", where, row)
    report.write(output_dir)
    return report


def find_metadata(folder: str | os.PathLike, names: Sequence[str]) -> Path | None:
    """The first of `names` inside `folder`, or None."""
    for name in names:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--audio_root", required=True,
                        help="LibriSpeech folder holding train-clean-360/ and test-clean/.")
    parser.add_argument("--validation_fraction", type=float, default=0.2,
                        help="Share of the train clips held out as the validation split.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the validation choice.")

    def run(args):
        train = find_metadata(args.input, TRAIN_NAMES)
        if train is None:
            raise ImporterError(f"{args.input}: holds none of {list(TRAIN_NAMES)}; --input is "
                                "the LibriSQA-PartI folder")
        return import_librisqa(train, find_metadata(args.input, TEST_NAMES), args.audio_root,
                               args.output, validation_fraction=args.validation_fraction,
                               seed=args.seed, on_missing=args.on_missing,
                               on_invalid=args.on_invalid)

    return run_command(parser, argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
