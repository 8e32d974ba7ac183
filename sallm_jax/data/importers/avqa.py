"""AVQA as R1-AQA distributes it (multiple-choice audio QA) -> task "aqa" manifests.

Input (github.com/xiaomi-research/r1-aqa): JSON Lines (or a JSON array), one question a line:
"question_text", "multi_choice" (list), "answer" (0-based index into it), "audio_path", optional
"id" and "category" (meta["category"], default "sound"). `audio_path` is often absolute on the
machine that built the file: relative paths join --audio_root (default: the input's folder), and
with --audio_root a missing path is also looked up there by file name. About 38K of AVQA's 40,425
questions have audio; --on_missing=skip leaves the rest out. "video" in questions becomes "audio",
as in R1-AQA's prompt (--keep_video_wording keeps it).

  python -m sallm_jax.data.importers.avqa --input avqa_train.jsonl --audio_root avqa_wavs \
      --output data/avqa [--validation_fraction 0.05]
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

from sallm_jax.data.importers.common import (
    ImportReport,
    InvalidRecord,
    add_with_validation,
    as_object,
    audio_candidates,
    base_parser,
    first_existing,
    get_field,
    get_string_list,
    iter_json_records,
    run_command,
)
from sallm_jax.data.manifest import ManifestRow

TASK = "aqa"
DEFAULT_CATEGORY = "sound"
# AVQA's own annotation fields, kept in meta for analysis by question type.
META_FIELDS = ("video_name", "video_id", "question_relation", "question_type", "dataset_name")


def avqa_row(record: object, line_id: str, audio_root: str, *, by_name: bool,
             video_to_audio: bool = True) -> ManifestRow:
    """One R1-AQA AVQA object -> a row; `line_id` names it when the record has no "id"."""
    record = as_object(record)
    choices = get_string_list(record, ("multi_choice", "choices"))
    answer_index = get_field(record, ("answer",), int)
    if not 0 <= answer_index < len(choices):
        raise InvalidRecord(f"field 'answer': index {answer_index} outside the "
                            f"{len(choices)} choices {choices}")
    question = get_field(record, ("question_text", "question"))
    if video_to_audio:
        question = question.replace("video", "audio")
    audio = first_existing(audio_candidates(get_field(record, ("audio_path", "audio")),
                                            audio_root, by_name=by_name))
    record_id = get_field(record, ("id",), (int, str), required=False)
    meta = {"category": get_field(record, ("category",), required=False) or DEFAULT_CATEGORY}
    meta.update({name: record[name] for name in META_FIELDS if name in record})
    return ManifestRow(id=f"avqa-{record_id if record_id is not None else line_id}",
                       audio=audio, task=TASK, question=question,
                       answer=choices[answer_index], choices=choices,
                       answer_index=answer_index, meta=meta)


def import_avqa(input_file: str | os.PathLike, output_dir: str | os.PathLike, *,
                audio_root: str | os.PathLike | None = None, split: str = "train",
                validation_fraction: float = 0.0, seed: int = 0, video_to_audio: bool = True,
                on_missing: str = "error", on_invalid: str = "error") -> ImportReport:
    """Write `output_dir/{split}.jsonl` (and validation.jsonl with a validation fraction).

    `audio_root`: where relative (and, by file name, stale absolute) audio paths are found (None:
    the input file's folder, no look-up by name). A `validation_fraction` of the clips, with all
    their questions, goes to "validation", chosen by `seed`. `video_to_audio`: "video" -> "audio"
    in questions. `on_missing`, `on_invalid`: "error" or "skip" (see `ImportReport`).
    """
    input_file = Path(input_file)
    splits = (split, "validation") if validation_fraction > 0 else (split,)
    report = ImportReport(splits, on_missing=on_missing, on_invalid=on_invalid)
    root = os.path.abspath(audio_root if audio_root is not None else input_file.parent)
    items = []
    for where, record in iter_json_records(input_file, report):
        line_id = f"line{where.rsplit(':', 1)[1]}"
        row = report.convert(where, functools.partial(
            avqa_row, record, line_id, root, by_name=audio_root is not None,
            video_to_audio=video_to_audio))
        if row is not None:
            items.append((where, row))
    add_with_validation(report, items, split, validation_fraction, seed)
    report.write(output_dir)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--audio_root", default=None,
                        help="Folder of the wav files (default: the input file's folder).")
    parser.add_argument("--split", default="train", help="Name of the output split.")
    parser.add_argument("--validation_fraction", type=float, default=0.0,
                        help="Share of the clips held out as validation.jsonl.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the validation choice.")
    parser.add_argument("--keep_video_wording", action="store_true",
                        help="Keep 'video' in the questions (R1-AQA says 'audio').")
    return run_command(parser, argv, lambda args: import_avqa(
        args.input, args.output, audio_root=args.audio_root, split=args.split,
        validation_fraction=args.validation_fraction, seed=args.seed,
        video_to_audio=not args.keep_video_wording, on_missing=args.on_missing,
        on_invalid=args.on_invalid))


if __name__ == "__main__":
    raise SystemExit(main())
