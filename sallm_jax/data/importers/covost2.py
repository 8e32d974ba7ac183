"""CoVoST 2 speech translation (default English -> German) -> task "ast" manifests.

Input (github.com/facebookresearch/covost): {input}/covost_v2.{src}_{tgt}.{train,dev,test}.tsv
from the release's get_covost_splits.py (a header, then one unquoted tab-separated row a line:
path, sentence, translation, client_id) and {audio_root}/{path}, the Common Voice 4 mp3 clips
(decoded later by the loader; libsndfile >= 1.1 reads mp3). Writes train, validation (from dev),
test.

  python -m sallm_jax.data.importers.covost2 --input covost_tsv --audio_root cv-corpus/en/clips \
      --output data/covost2_en_de
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

from sallm_jax.data.importers.common import (
    ImporterError,
    ImportReport,
    InvalidRecord,
    base_parser,
    run_command,
)
from sallm_jax.data.manifest import ManifestRow

TASK = "ast"
COLUMNS = ("path", "sentence", "translation", "client_id")
SPLITS = {"train": "train", "dev": "validation", "test": "test"}  # CoVoST name -> ours
# The languages of CoVoST 2 (X -> English and English -> X), named for the prompt.
LANGUAGE_NAMES = {
    "en": "English", "de": "German", "ca": "Catalan", "zh-CN": "Chinese", "fa": "Persian",
    "et": "Estonian", "mn": "Mongolian", "tr": "Turkish", "ar": "Arabic", "sv-SE": "Swedish",
    "lv": "Latvian", "sl": "Slovenian", "ta": "Tamil", "ja": "Japanese", "id": "Indonesian",
    "cy": "Welsh", "fr": "French", "es": "Spanish", "it": "Italian", "ru": "Russian",
    "pt": "Portuguese", "nl": "Dutch",
}  # fmt: skip


def translation_question(source_lang: str, target_lang: str) -> str:
    """The prompt, e.g. "Translate the English speech into German."."""
    for code in (source_lang, target_lang):
        if code not in LANGUAGE_NAMES:
            raise ImporterError(f"language {code!r}: expected one of {sorted(LANGUAGE_NAMES)}")
    return (f"Translate the {LANGUAGE_NAMES[source_lang]} speech into "
            f"{LANGUAGE_NAMES[target_lang]}.")


def covost_row(fields: dict[str, str], clips_dir: str, question: str, source_lang: str,
               target_lang: str) -> ManifestRow:
    """One TSV row (column name -> value) -> a row; the id is the clip's file name stem."""
    values = {}
    for column in COLUMNS:
        value = fields[column].strip()
        # client_id may legitimately be anything, but an empty text column is a broken row.
        if not value and column != "client_id":
            raise InvalidRecord(f"column {column!r}: empty")
        values[column] = value
    clip = values["path"]
    return ManifestRow(
        id=os.path.splitext(os.path.basename(clip))[0], audio=os.path.join(clips_dir, clip),
        task=TASK, question=question, answer=values["translation"], source_lang=source_lang,
        target_lang=target_lang,
        meta={"sentence": values["sentence"], "client_id": values["client_id"]})


def _read_tsv(path: Path, split: str, clips_dir: str, question: str, source_lang: str,
              target_lang: str, report: ImportReport) -> None:
    try:
        handle = open(path, encoding="utf-8", newline="")
    except OSError as error:
        raise ImporterError(f"{path}: cannot read: {error}") from error
    with handle:
        header = handle.readline().rstrip("\r\n").split("\t")
        absent = [column for column in COLUMNS if column not in header]
        if absent:
            raise ImporterError(f"{path}:1: header lacks column(s) {absent}; expected the "
                                f"columns {list(COLUMNS)}, got {header}")
        index = {column: header.index(column) for column in COLUMNS}
        for line_number, line in enumerate(handle, start=2):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            cells = line.split("\t")
            if len(cells) != len(header):
                report.invalid(where, f"expected {len(header)} tab-separated columns, got "
                                      f"{len(cells)}")
                continue
            fields = {column: cells[i] for column, i in index.items()}
            report.take(split, where, functools.partial(covost_row, fields, clips_dir, question,
                                                        source_lang, target_lang))


def import_covost2(tsv_dir: str | os.PathLike, audio_root: str | os.PathLike,
                   output_dir: str | os.PathLike, *, source_lang: str = "en",
                   target_lang: str = "de", on_missing: str = "error",
                   on_invalid: str = "error") -> ImportReport:
    """Write `output_dir/{train,validation,test}.jsonl` from the three split TSVs.

    `tsv_dir` holds covost_v2.{source_lang}_{target_lang}.{train,dev,test}.tsv; `audio_root` is
    the source language's Common Voice `clips` folder. `ImporterError` for a language outside
    `LANGUAGE_NAMES` or a missing TSV; `on_missing`, `on_invalid`: see `ImportReport`.
    """
    question = translation_question(source_lang, target_lang)
    tsvs = {split: Path(tsv_dir) / f"covost_v2.{source_lang}_{target_lang}.{name}.tsv"
            for name, split in SPLITS.items()}
    absent = [str(path) for path in tsvs.values() if not path.is_file()]
    if absent:
        raise ImporterError(f"CoVoST 2 split file(s) not found: {absent} (make them with the "
                            "release's get_covost_splits.py)")
    report = ImportReport(tuple(SPLITS.values()), on_missing=on_missing, on_invalid=on_invalid)
    clips_dir = os.path.abspath(audio_root)
    for split, path in tsvs.items():
        _read_tsv(path, split, clips_dir, question, source_lang, target_lang, report)
    report.write(output_dir)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--audio_root", required=True,
                        help="The Common Voice clips folder of the source language.")
    parser.add_argument("--source_lang", default="en")
    parser.add_argument("--target_lang", default="de")
    return run_command(parser, argv, lambda args: import_covost2(
        args.input, args.audio_root, args.output, source_lang=args.source_lang,
        target_lang=args.target_lang, on_missing=args.on_missing, on_invalid=args.on_invalid))


if __name__ == "__main__":
    raise SystemExit(main())
