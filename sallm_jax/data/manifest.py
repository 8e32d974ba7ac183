"""The project's manifest format: JSON Lines, one `ManifestRow` object a line.

`audio` is relative to the manifest's folder (absolute paths are kept); `offset` / `duration`
(seconds) select a span of a longer file. Example:
  {"id": "sqa-00001-0", "audio": "audio/p00001.wav", "task": "sqa",
   "question": "Where did Maria take the apples?", "answer": "She took them to the library."}
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sallm_jax.data.bad_input import SkipLog
from sallm_jax.runtime.user_errors import UserError


class ManifestError(UserError, ValueError):
    """A manifest line that cannot be used; the message starts with "{path}:{line}:"."""


@dataclasses.dataclass
class ManifestRow:
    """One example: an audio clip (or a span of one), a prompt and its reference answer."""

    id: str
    audio: str
    task: str
    question: str
    answer: str
    offset: float | None = None
    duration: float | None = None
    choices: list[str] | None = None
    answer_index: int | None = None
    source_lang: str | None = None
    target_lang: str | None = None
    meta: dict = dataclasses.field(default_factory=dict)


_REQUIRED = ("id", "audio", "task", "question", "answer")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_field(name: str, value: Any) -> str | None:
    """What the field should have been, or None when `value` is acceptable."""
    if name in _REQUIRED:
        return None if isinstance(value, str) else "a string"
    if value is None:
        return None if name != "meta" else "an object"
    # bool is a subclass of int in Python, but `true` is never a valid number here.
    if name in ("offset", "duration"):
        ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
        return None if ok else "a non-negative number or null"
    if name == "answer_index":
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else "an integer or null"
    if name == "choices":
        ok = isinstance(value, list) and all(isinstance(c, str) for c in value)
        return None if ok else "a list of strings or null"
    if name in ("source_lang", "target_lang"):
        return None if isinstance(value, str) else "a string or null"
    if name == "meta":
        return None if isinstance(value, dict) else "an object"
    raise AssertionError(name)


def _parse_line(record: Any, where: str, base_dir: Path) -> ManifestRow:
    if not isinstance(record, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {_type_name(record)}")
    known = {f.name for f in dataclasses.fields(ManifestRow)}
    for name in record:
        if name not in known:
            raise ManifestError(
                f"{where}: field '{name}': expected one of {sorted(known)}, got an unknown field"
            )
    for name in _REQUIRED:
        if name not in record:
            raise ManifestError(f"{where}: field '{name}': expected a string, got no such field")
    for name, value in record.items():
        expected = _check_field(name, value)
        if expected is not None:
            raise ManifestError(
                f"{where}: field '{name}': expected {expected}, got {_type_name(value)} {value!r}"
            )
    if not record["answer"].strip():
        raise ManifestError(f"{where}: field 'answer': expected a non-empty string (an empty "
                            f"reference can never earn a reward), got {record['answer']!r}")
    index, choices = record.get("answer_index"), record.get("choices")
    if index is not None and not (choices and 0 <= index < len(choices)):
        raise ManifestError(f"{where}: field 'answer_index': expected an index into the "
                            f"{len(choices or [])} choices, got {index}")
    if record.get("meta") is None:
        record = {**record, "meta": {}}
    for name in ("offset", "duration"):
        if record.get(name) is not None:
            record[name] = float(record[name])
    audio = os.path.normpath(os.path.join(base_dir, record["audio"]))
    return ManifestRow(**{**record, "audio": audio})


def read_manifest(path: str | os.PathLike, skip_log: SkipLog | None = None) -> list[ManifestRow]:
    """Parse and validate a manifest; `audio` comes back as an absolute path string.

    A bad line (a field of the wrong type, an empty answer, `answer_index` outside `choices`, a
    repeated id) raises `ManifestError` naming file, 1-based line and field, or with a "skip"
    `skip_log` is recorded there and left out. Blank lines and a leading BOM are accepted.
    """
    path = Path(path)
    base_dir = path.resolve().parent
    rows, first_seen = [], {}
    with open(path, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            where = f"{path}:{line_number}"
            try:
                # A byte-order mark may open the file (editors on Windows write one).
                row = _parse_raw_line(raw.removeprefix(b"\xef\xbb\xbf") if line_number == 1
                                      else raw, where, base_dir)
                if row is not None and row.id in first_seen:
                    raise ManifestError(f"{where}: field 'id': {row.id!r} is already the id of "
                                        f"line {first_seen[row.id]}; ids must be unique")
                if row is not None:
                    first_seen[row.id] = line_number
            except ManifestError as error:
                if skip_log is None or skip_log.policy == "error":
                    raise
                skip_log.handle(where, where, "bad manifest line",
                                str(error)[len(where) + 2 :])
                continue
            if row is not None:
                rows.append(row)
    return rows


def _parse_raw_line(raw: bytes, where: str, base_dir: Path) -> ManifestRow | None:
    """One manifest line as a row (None for a blank line); raises ManifestError."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ManifestError(f"{where}: not UTF-8 text: {error}") from error
    if not text.strip():
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise ManifestError(f"{where}: invalid JSON: {error}") from error
    return _parse_line(record, where, base_dir)


def write_manifest(path: str | os.PathLike, rows: Iterable[ManifestRow]) -> Path:
    """Write `rows` as JSON Lines, audio paths relative to the manifest's folder.

    None fields and an empty `meta` are left out.
    """
    path = Path(path)
    base_dir = path.resolve().parent
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            record = dataclasses.asdict(row)
            if os.path.isabs(record["audio"]):
                record["audio"] = os.path.relpath(record["audio"], base_dir)
            record = {k: v for k, v in record.items() if v is not None and v != {}}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path
