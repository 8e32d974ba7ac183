"""Long fields cut for the log and the reports: a 1 MB answer must not be copied whole into every
line that shows it."""

from __future__ import annotations

SHOWN = 500  # characters of a field the log and the reports show


def shorten(text: str, limit: int = SHOWN) -> str:
    """`text` when it has at most `limit` characters, else its first `limit` followed by its
    length, e.g. "abc… [1,048,576 characters]"."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text):,} characters]"
