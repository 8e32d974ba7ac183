"""Record files a kill must not leave half written, and JSONL files it may have cut short."""

from __future__ import annotations

import json
import logging
import os
import pathlib
from typing import Any


def write_atomically(path: pathlib.Path, text: str) -> None:
    """Write `text` to `path` via a sibling renamed over it: readers see old or new, never part."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def read_json(path: pathlib.Path) -> Any | None:
    """The JSON value in `path`; None when it does not exist or cannot be parsed (cut short by a
    kill or a full disk, which is logged naming the file)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except ValueError as error:
        logging.warning("%s cannot be parsed (%s); it is made again", path, error)
        return None


def mend_jsonl(path: pathlib.Path) -> None:
    """End `path` after its last whole line: an unterminated last line (cut by a kill) is dropped
    with a warning, or completed when it is whole JSON; nothing if absent or newline-terminated."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return
    if not data or data.endswith(b"\n"):
        return
    whole = data.rfind(b"\n") + 1
    tail = data[whole:]
    try:
        json.loads(tail)
    except ValueError:
        logging.warning("%s: dropping its last line, cut short by a kill (%d bytes: %r)", path,
                        len(tail), tail[:80])
        os.truncate(path, whole)
    else:
        with open(path, "ab") as f:
            f.write(b"\n")
