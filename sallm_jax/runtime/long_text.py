"""Long fields cut for the log and the reports (a 1 MB answer is not copied into every line)."""

from __future__ import annotations

SHOWN = 500  # characters of a field the log and the reports show


def shorten(text: str, limit: int = SHOWN) -> str:
    """`text`, or its first `limit` characters and its length: "abc… [1,048,576 characters]"."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text):,} characters]"
