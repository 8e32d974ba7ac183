"""LibriSpeech from a prepared tensorflow-datasets directory -> 16 kHz wav files + "asr" manifests.

Input: a TFDS `librispeech` builder already prepared under --input / --data_dir
({data_dir}/librispeech/{config}/{version}/dataset_info.json; nothing is downloaded): features
speech (flac bytes, decoded here with libsndfile, or int16 arrays), text, speaker_id, chapter_id,
id ("{speaker}-{chapter}-{utterance}"); splits train_clean100, train_clean360, train_other500,
dev_clean, dev_other, test_clean, test_other. Writes
{output}/audio/{split}/{speaker}/{chapter}/{id}.wav (16-bit PCM, 16 kHz mono) and
{output}/{split}.jsonl (question "Transcribe the audio.", answer the lower-cased transcript).
Only `import_librispeech_tfds` needs tensorflow-datasets and TensorFlow.

  python -m sallm_jax.data.importers.librispeech --input ~/tensorflow_datasets \
      --output data/librispeech --splits train_clean100:train,dev_clean:validation,test_clean:test
"""

from __future__ import annotations

import functools
import io
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import soxr

from sallm_jax.data.importers.common import (
    ImporterError,
    ImportReport,
    InvalidRecord,
    base_parser,
    get_field,
    run_command,
)
from sallm_jax.data.manifest import ManifestRow

TASK = "asr"
QUESTION = "Transcribe the audio."
SAMPLE_RATE = 16000
DEFAULT_SPLITS = "train_clean100:train,dev_clean:validation,test_clean:test"


def _text(value: Any) -> Any:
    # tfds.as_numpy yields tf.string features as bytes.
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _decode_encoded(speech: bytes) -> tuple[np.ndarray, int]:
    """([samples] int16, rate) from the stored (flac) bytes of the speech feature."""
    try:
        samples, rate = soundfile.read(io.BytesIO(speech), dtype="int16", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise InvalidRecord(f"field 'speech': cannot decode the encoded audio: {error}") from error
    # Channels averaged (LibriSpeech is mono, for which this is exact).
    return samples.mean(axis=1).astype(np.int16), rate


def _as_pcm16(speech: Any, sample_rate: int) -> np.ndarray:
    """[samples] int16 at 16 kHz from integer PCM (16-bit range, exact) or floats in [-1, 1]."""
    samples = np.asarray(speech)
    if samples.ndim != 1 or samples.size == 0:
        raise InvalidRecord(f"field 'speech': expected a non-empty 1-D sample array, got shape "
                            f"{samples.shape}")
    if np.issubdtype(samples.dtype, np.integer):
        # TFDS stores 16-bit PCM values whatever integer dtype it declares.
        samples = samples.clip(-32768, 32767).astype(np.int16)
        if sample_rate == SAMPLE_RATE:
            return samples
        samples = samples.astype(np.float32) / 32768.0
    elif not np.issubdtype(samples.dtype, np.floating):
        raise InvalidRecord(f"field 'speech': expected integer or float samples, got "
                            f"{samples.dtype}")
    samples = samples.astype(np.float32)
    if sample_rate != SAMPLE_RATE:
        samples = soxr.resample(samples, sample_rate, SAMPLE_RATE, quality="HQ")
    return np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)


def librispeech_row(example: Mapping[str, Any], split: str, audio_dir: str | os.PathLike,
                    sample_rate: int = SAMPLE_RATE) -> tuple[ManifestRow, np.ndarray]:
    """One TFDS example -> (row, [samples] int16 at 16 kHz to write at `row.audio`).

    `example`: the TFDS librispeech features (numpy values, strings as bytes or str), speech at
    `sample_rate`. `row.audio` is `audio_dir/{split}/{speaker}/{chapter}/{id}.wav`.
    """
    example = {key: _text(value) if key in ("text", "id") else value
               for key, value in example.items()}
    utterance = get_field(example, ("id",))
    if "/" in utterance or "\\" in utterance or utterance.startswith("."):
        # The id becomes a file name; it must not point outside the audio folder.
        raise InvalidRecord(f"field 'id': {utterance!r} is not usable as a file name")
    transcript = get_field(example, ("text",))
    speaker = get_field(example, ("speaker_id",), (int, np.integer))
    chapter = get_field(example, ("chapter_id",), (int, np.integer))
    speech = get_field(example, ("speech",), (np.ndarray, list, bytes))
    if isinstance(speech, bytes):
        speech, sample_rate = _decode_encoded(speech)
    samples = _as_pcm16(speech, sample_rate)
    audio = os.path.join(os.path.abspath(audio_dir), split, str(int(speaker)), str(int(chapter)),
                         f"{utterance}.wav")
    row = ManifestRow(id=utterance, audio=audio, task=TASK, question=QUESTION,
                      answer=transcript.lower(),
                      meta={"speaker_id": int(speaker), "chapter_id": int(chapter),
                            "audio_seconds": round(len(samples) / SAMPLE_RATE, 4)})
    return row, samples


def _convert_and_write(example: Mapping[str, Any], split: str, audio_dir: str,
                       sample_rate: int) -> ManifestRow:
    # The wav is written before the row reaches ImportReport, whose check is that it exists.
    row, samples = librispeech_row(example, split, audio_dir, sample_rate)
    os.makedirs(os.path.dirname(row.audio), exist_ok=True)
    soundfile.write(row.audio, samples, SAMPLE_RATE, subtype="PCM_16")
    return row


def import_librispeech_examples(examples: Mapping[str, Iterable[Mapping[str, Any]]],
                                output_dir: str | os.PathLike, *,
                                sample_rate: int = SAMPLE_RATE,
                                on_invalid: str = "error") -> ImportReport:
    """Write wav files under `output_dir/audio/` and `output_dir/{split}.jsonl` per split.

    `examples`: output split name -> TFDS-shaped examples (see `librispeech_row`) at
    `sample_rate`; `on_invalid`: "error" or "skip" for a missing or malformed feature.
    """
    output_dir = Path(output_dir)
    audio_dir = os.path.abspath(output_dir / "audio")
    report = ImportReport(tuple(examples), on_invalid=on_invalid)
    for split, split_examples in examples.items():
        for index, example in enumerate(split_examples):
            report.take(split, f"librispeech[{split}][{index}]", functools.partial(
                _convert_and_write, example, split, audio_dir, sample_rate))
    report.write(output_dir)
    return report


def parse_splits(spec: str) -> dict[str, str]:
    """"tfds_split:ours,..." -> {tfds_split: ours}; a bare name keeps its TFDS name."""
    mapping = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        source, _, target = part.partition(":")
        mapping[source] = target or source
    if not mapping:
        raise ImporterError(f"--splits: expected 'tfds_split[:name],...', got {spec!r}")
    return mapping


def find_prepared(data_dir: str | os.PathLike) -> Path:
    """`data_dir` if it holds dataset_info.json, else its highest librispeech/**/{version}/.

    Raises `ImporterError` if there is none.
    """
    data_dir = Path(data_dir)
    if (data_dir / "dataset_info.json").is_file():
        return data_dir
    found = [info.parent for info in data_dir.glob("librispeech/**/dataset_info.json")]
    if not found:
        raise ImporterError(f"{data_dir}: no prepared TFDS 'librispeech' dataset (expected "
                            f"{data_dir}/librispeech/<version>/dataset_info.json); prepare it "
                            "with tfds first, this importer downloads nothing")

    def version(path: Path) -> tuple[int, ...]:
        match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", path.name)
        return tuple(int(part) for part in match.groups()) if match else (-1,)

    return max(found, key=lambda path: (version(path), str(path)))


def import_librispeech_tfds(data_dir: str | os.PathLike, output_dir: str | os.PathLike, *,
                            splits: Mapping[str, str] | None = None,
                            on_invalid: str = "error") -> ImportReport:
    """Import the prepared TFDS `librispeech` data under `data_dir`; never downloads.

    `data_dir` holds `librispeech/` (or is the version folder); `splits`: TFDS split -> output
    name (default `DEFAULT_SPLITS`). `ImporterError` without tensorflow-datasets and TensorFlow,
    or for a split that is not prepared.
    """
    builder_dir = find_prepared(data_dir)
    try:
        import tensorflow_datasets as tfds  # lazy: optional, and slow to import

        builder = tfds.builder_from_directory(os.fspath(builder_dir))
    except ModuleNotFoundError as error:
        raise ImporterError(f"{builder_dir}: reading TFDS librispeech needs tensorflow-datasets "
                            f"and TensorFlow ({error}); pip install tensorflow-datasets "
                            "tensorflow") from error
    splits = dict(splits or parse_splits(DEFAULT_SPLITS))
    available = set(builder.info.splits.keys())
    unknown = sorted(set(splits) - available)
    if unknown:
        raise ImporterError(f"{builder_dir}: TFDS librispeech has no split(s) {unknown}; "
                            f"prepared splits: {sorted(available)}")
    sample_rate = getattr(builder.info.features["speech"], "sample_rate", None) or SAMPLE_RATE
    # SkipDecoding hands over the stored flac bytes, decoded here by libsndfile: TFDS itself
    # would need tensorflow-io to decode them. tfds.as_numpy yields one example at a time.
    decoders = {"speech": tfds.decode.SkipDecoding()}
    examples = {target: tfds.as_numpy(builder.as_dataset(split=source, shuffle_files=False,
                                                         decoders=decoders))
                for source, target in splits.items()}
    return import_librispeech_examples(examples, output_dir, sample_rate=sample_rate,
                                       on_invalid=on_invalid)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = base_parser(__doc__.split("\n\n")[0], input_aliases=("--data_dir",))
    parser.add_argument("--splits", default=DEFAULT_SPLITS,
                        help="Comma-separated tfds_split[:output_name] pairs.")
    return run_command(parser, argv, lambda args: import_librispeech_tfds(
        args.input, args.output, splits=parse_splits(args.splits), on_invalid=args.on_invalid))


if __name__ == "__main__":
    raise SystemExit(main())
