"""What every importer shares: record parsing, the skip / error policy, and manifest writing.

An importer hands each record's `ManifestRow` (absolute `audio` path) to `ImportReport.take`.
Nothing is written until every record is read, so a run stopped by an error leaves no manifests.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import random
import sys
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sallm_jax.data.manifest import ManifestRow, write_manifest

logger = logging.getLogger(__name__)
T = TypeVar("T")

POLICIES = ("error", "skip")
MISSING_AUDIO = "missing audio file"
INVALID_RECORD = "invalid record"
# A log line every this many records, so a 200K-row import shows it is alive.
PROGRESS_EVERY = 50_000
# Missing files listed by path in the summary; beyond this only the count is printed.
MAX_LISTED_MISSING = 20


class ImporterError(ValueError):
    """Input that stops an import; the message starts with "{file}:{line}:" where one applies."""


class InvalidRecord(ValueError):
    """Raised by a record converter; `ImportReport` adds the source location to the message."""


class ImportReport:
    """Rows kept per split, rows skipped per reason, and the policy for bad records.

    Every split in `splits` gets a manifest, even if empty. `on_missing` ("error" or "skip"): a
    record whose audio file does not exist; `on_invalid`: one that cannot be parsed or lacks a
    field. "error" raises `ImporterError` naming file and line; "skip" counts the record.
    """

    def __init__(self, splits: Sequence[str], *, on_missing: str = "error",
                 on_invalid: str = "error") -> None:
        for name, policy in (("on_missing", on_missing), ("on_invalid", on_invalid)):
            if policy not in POLICIES:
                raise ValueError(f"{name}: expected one of {POLICIES}, got {policy!r}")
        self.splits = tuple(splits)
        self.on_missing = on_missing
        self.on_invalid = on_invalid
        self.rows: dict[str, list[ManifestRow]] = {split: [] for split in self.splits}
        self.skipped: collections.Counter[str] = collections.Counter()
        self.missing: list[tuple[str, str]] = []  # (where, audio path)
        self.written: dict[str, Path] = {}
        self._ids: dict[str, set[str]] = {split: set() for split in self.splits}
        self._seen = 0

    def invalid(self, where: str, message: str) -> None:
        """Stop (on_invalid="error") or count a record that cannot be used."""
        if self.on_invalid == "error":
            raise ImporterError(f"{where}: {message} (use --on_invalid=skip to leave such "
                                "records out)")
        self.skipped[INVALID_RECORD] += 1
        logger.warning("skipping %s: %s", where, message)

    def audio_exists(self, where: str, path: str) -> bool:
        """True if `path` is a file; otherwise stop (on_missing="error") or count it."""
        if os.path.isfile(path):
            return True
        if self.on_missing == "error":
            raise ImporterError(f"{where}: audio file not found: {path} (use --on_missing=skip "
                                "to leave such rows out)")
        self.skipped[MISSING_AUDIO] += 1
        self.missing.append((where, path))
        logger.warning("skipping %s: audio file not found: %s", where, path)
        return False

    def convert(self, where: str, make_row: Callable[[], ManifestRow]) -> ManifestRow | None:
        """`make_row()` with its `InvalidRecord` turned into the policy; None for a skipped row.

        The row's audio must be an absolute path; it is checked for existence here.
        """
        self._seen += 1
        if self._seen % PROGRESS_EVERY == 0:
            logger.info("%d records read (now at %s)", self._seen, where)
        try:
            row = make_row()
        except InvalidRecord as error:
            self.invalid(where, str(error))
            return None
        return row if self.audio_exists(where, row.audio) else None

    def add(self, split: str, where: str, row: ManifestRow) -> None:
        """Keep `row` in `split`; a repeated id in one split is an invalid record."""
        if row.id in self._ids[split]:
            self.invalid(where, f"id {row.id!r} already used in split {split!r}")
            return
        self._ids[split].add(row.id)
        self.rows[split].append(row)

    def take(self, split: str, where: str, make_row: Callable[[], ManifestRow]) -> None:
        """`convert` then `add`: the usual path of one record into one split."""
        row = self.convert(where, make_row)
        if row is not None:
            self.add(split, where, row)

    def write(self, output_dir: str | os.PathLike) -> dict[str, Path]:
        """Write `output_dir/{split}.jsonl` for every split; audio paths become relative."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        for split in self.splits:
            path = output_dir / f"{split}.jsonl"
            # Write beside and rename, so an interrupted run never leaves a truncated manifest.
            staging = output_dir / f".{split}.jsonl.partial"
            write_manifest(staging, self.rows[split])
            os.replace(staging, path)
            self.written[split] = path
        return dict(self.written)

    def summary(self) -> str:
        """Rows per split (and where they were written), then skipped rows by reason."""
        lines = []
        for split in self.splits:
            target = f" -> {self.written[split]}" if split in self.written else ""
            lines.append(f"{split}: {len(self.rows[split])} rows{target}")
        total = sum(self.skipped.values())
        reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(self.skipped.items()))
        lines.append(f"skipped: {total}" + (f" ({reasons})" if reasons else ""))
        for where, path in self.missing[:MAX_LISTED_MISSING]:
            lines.append(f"  missing audio file {path} (from {where})")
        if len(self.missing) > MAX_LISTED_MISSING:
            lines.append(f"  ... and {len(self.missing) - MAX_LISTED_MISSING} more missing files")
        return "\n".join(lines)


def iter_json_records(path: str | os.PathLike, report: ImportReport) -> Iterator[tuple[str, Any]]:
    """Yield ("{path}:{line}", record) from a JSON array file ("[" first) or a JSON Lines file.

    A bad JSON Lines line goes to `report.invalid`; a broken array raises `ImporterError`.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ImporterError(f"{path}: cannot read: {error}") from error
    stripped = text.lstrip()
    if stripped.startswith("["):
        yield from _iter_json_array(path, text, len(text) - len(stripped))
        return
    # Lines end at "\n" only: JSON strings may hold U+2028, U+2029 or U+0085 unescaped, where
    # str.splitlines would also break.
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            report.invalid(where, f"invalid JSON: {error}")
            continue
        yield where, record


def _iter_json_array(path: Path, text: str, start: int) -> Iterator[tuple[str, Any]]:
    decoder = json.JSONDecoder()
    line, counted = 1, 0

    def where_at(pos: int) -> str:
        # Count newlines incrementally: the file is scanned once however many elements it has.
        nonlocal line, counted
        line += text.count("\n", counted, pos)
        counted = pos
        return f"{path}:{line}"

    pos = _skip_space(text, start + 1)
    if text.startswith("]", pos):
        pos += 1
    else:
        while True:
            where = where_at(pos)
            try:
                record, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as error:
                raise ImporterError(f"{where}: invalid JSON in the array: {error}") from error
            yield where, record
            pos = _skip_space(text, pos)
            if text.startswith("]", pos):
                pos += 1
                break
            if not text.startswith(",", pos):
                raise ImporterError(f"{where_at(pos)}: expected ',' or ']' after an array element")
            pos = _skip_space(text, pos + 1)
    if text[pos:].strip():
        raise ImporterError(f"{where_at(pos)}: text after the closing ']' of the JSON array")


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def as_object(record: Any) -> dict:
    """`record` if it is a JSON object; otherwise `InvalidRecord`."""
    if not isinstance(record, dict):
        raise InvalidRecord(f"expected a JSON object, got {_type_name(record)}")
    return record


def get_field(record: dict, names: Sequence[str], kind: type | tuple[type, ...] = str, *,
              required: bool = True) -> Any:
    """The value of the first of `names` in `record`; None for an absent optional field.

    Strings are stripped and must be non-empty; bools are not ints. Else `InvalidRecord`.
    """
    for name in names:
        if name in record:
            value = record[name]
            break
    else:
        if not required:
            return None
        spelled = " or ".join(repr(n) for n in names)
        raise InvalidRecord(f"field {spelled}: missing (fields present: {sorted(record)})")
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if ok and isinstance(value, str):
        value = value.strip()
        ok = bool(value)
    if not ok:
        expected = " or ".join("non-empty string" if k is str else k.__name__ for k in kinds)
        raise InvalidRecord(f"field {name!r}: expected {expected}, got {_type_name(value)} "
                            f"{value!r:.80}")
    return value


def get_string_list(record: dict, names: Sequence[str], *, min_length: int = 2) -> list[str]:
    """A list field of non-empty strings (answer choices), at least `min_length` long."""
    value = get_field(record, names, list)
    if len(value) < min_length or not all(isinstance(v, str) and v.strip() for v in value):
        raise InvalidRecord(f"field {names[0]!r}: expected a list of at least {min_length} "
                            f"non-empty strings, got {value!r:.120}")
    return [v.strip() for v in value]


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def first_existing(candidates: Iterable[str]) -> str:
    """The first candidate path that is a file, or the first candidate when none is."""
    candidates = list(candidates)
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    return candidates[0]


def audio_candidates(given: str, root: str, *, by_name: bool) -> list[str]:
    """`root/given` (or absolute `given`), and with `by_name` also `root/{file name}`.

    `by_name` serves releases with their build machine's paths (R1-AQA's AVQA, MMAU's ids).
    """
    candidates = [os.path.normpath(os.path.join(root, given))]
    if by_name:
        candidates.append(os.path.join(root, os.path.basename(given)))
    return candidates


def split_by_group(items: Sequence[T], fraction: float, seed: int,
                   group: Callable[[T], Hashable]) -> tuple[list[T], list[T]]:
    """(kept, held_out): a `fraction` of the groups (not items) held out, chosen by `seed`.

    Independent of item order. Raises `ImporterError` unless 0 <= fraction < 1.
    """
    if not 0.0 <= fraction < 1.0:
        raise ImporterError(f"validation_fraction: expected a number in [0, 1), got {fraction}")
    groups = sorted({group(item) for item in items}, key=repr)
    random.Random(seed).shuffle(groups)
    held = set(groups[: round(fraction * len(groups))])
    kept = [item for item in items if group(item) not in held]
    held_out = [item for item in items if group(item) in held]
    return kept, held_out


def add_with_validation(report: ImportReport, items: Sequence[tuple[str, ManifestRow]],
                        split: str, fraction: float, seed: int) -> None:
    """Add (where, row) items to `split`; a `fraction` of their audio files go to "validation"."""
    kept, held_out = split_by_group(items, fraction, seed, group=lambda item: item[1].audio)
    for name, chosen in ((split, kept), ("validation", held_out)):
        for where, row in chosen:
            report.add(name, where, row)


def base_parser(description: str, input_aliases: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The flags every importer takes: --input (or aliases), --output, --on_missing/invalid."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--input", *input_aliases, dest="input", required=True,
                        help="The data set's native file or folder.")
    parser.add_argument("--output", required=True,
                        help="Folder for the manifests, {split}.jsonl.")
    parser.add_argument("--on_missing", choices=POLICIES, default="error",
                        help="A record whose audio file does not exist: stop (error) or leave it "
                             "out and count it (skip).")
    parser.add_argument("--on_invalid", choices=POLICIES, default="error",
                        help="A record that cannot be parsed or lacks a field: stop or skip.")
    return parser


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
                run: Callable[[argparse.Namespace], ImportReport]) -> int:
    """Parse `argv`, run the import, print its summary; an `ImporterError` exits with status 1."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        report = run(args)
    except ImporterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0
