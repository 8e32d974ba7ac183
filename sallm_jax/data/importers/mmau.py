"""MMAU test-mini (1000 multiple-choice audio questions) -> a task "aqa" test manifest.

Input (github.com/Sakshi113/MMAU, mmau-test-mini.json): a JSON array of objects with "id",
"audio_id" ("./test-mini-audios/....wav"), "question", "choices", "answer" (the correct choice's
text), "task" (the domain, sound / music / speech: meta["category"]; some copies put it in
"category", which otherwise holds the skill), "sub-category", "difficulty", "dataset".
`audio_id` is relative to --audio_root (default: the JSON's folder), else looked up by file name
directly under it, as R1-AQA's prepare script does.

  python -m sallm_jax.data.importers.mmau --input mmau-test-mini.json --output data/mmau
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

from sallm_jax.data.importers.common import (
    ImportReport,
    InvalidRecord,
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
DOMAINS = ("sound", "music", "speech")
# Extra MMAU annotations kept in meta (under these names) for per-skill breakdowns.
META_FIELDS = {"category": "skill", "sub-category": "sub_category", "difficulty": "difficulty",
               "dataset": "dataset"}


def mmau_row(record: object, audio_root: str) -> ManifestRow:
    """One MMAU object -> a row with meta {"category": domain, ...}."""
    record = as_object(record)
    record_id = get_field(record, ("id",))
    choices = get_string_list(record, ("choices",))
    answer = get_field(record, ("answer",))
    if answer not in choices:
        raise InvalidRecord(f"id {record_id!r}: answer {answer!r} is not one of the choices "
                            f"{choices}")
    domain_field = next((name for name in ("task", "category")
                         if str(record.get(name, "")).strip().lower() in DOMAINS), None)
    if domain_field is None:
        raise InvalidRecord(f"id {record_id!r}: neither field 'task' nor 'category' holds one of "
                            f"{DOMAINS} (got task={record.get('task')!r}, "
                            f"category={record.get('category')!r})")
    meta = {"category": record[domain_field].strip().lower()}
    meta.update({ours: record[theirs] for theirs, ours in META_FIELDS.items()
                 if theirs != domain_field and isinstance(record.get(theirs), str)})
    audio = first_existing(audio_candidates(get_field(record, ("audio_id", "audio_path")),
                                            audio_root, by_name=True))
    return ManifestRow(id=record_id, audio=audio, task=TASK,
                       question=get_field(record, ("question",)), answer=answer,
                       choices=choices, answer_index=choices.index(answer), meta=meta)


def import_mmau(input_file: str | os.PathLike, output_dir: str | os.PathLike, *,
                audio_root: str | os.PathLike | None = None, split: str = "test",
                on_missing: str = "error", on_invalid: str = "error") -> ImportReport:
    """Write `output_dir/{split}.jsonl` from mmau-test-mini.json (or the full test JSON).

    `audio_root`: the folder `audio_id` is relative to (None: the JSON's folder). `on_missing`,
    `on_invalid`: see `ImportReport`; an answer not among its choices is an invalid record.
    """
    input_file = Path(input_file)
    report = ImportReport((split,), on_missing=on_missing, on_invalid=on_invalid)
    root = os.path.abspath(audio_root if audio_root is not None else input_file.parent)
    for where, record in iter_json_records(input_file, report):
        report.take(split, where, functools.partial(mmau_row, record, root))
    report.write(output_dir)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--audio_root", default=None,
                        help="Folder that audio_id is relative to (default: the JSON's folder).")
    parser.add_argument("--split", default="test", help="Name of the output split.")
    return run_command(parser, argv, lambda args: import_mmau(
        args.input, args.output, audio_root=args.audio_root, split=args.split,
        on_missing=args.on_missing, on_invalid=args.on_invalid))


if __name__ == "__main__":
    raise SystemExit(main())
