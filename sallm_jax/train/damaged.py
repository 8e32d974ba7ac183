"""Restore errors that mean damaged files, and setting damaged folders aside (never loaded)."""

from __future__ import annotations

import os
import pathlib
import shutil

import jax

# Errors that say nothing about the files: not enough memory, or no permission to read them.
_NOT_DAMAGE = (MemoryError, PermissionError)
_NOT_DAMAGE_TEXT = ("RESOURCE_EXHAUSTED", "Out of memory", "PERMISSION_DENIED")


def is_damage(error: Exception) -> bool:
    """Whether a failed restore means damaged files, not a lack of memory or permission."""
    if isinstance(error, _NOT_DAMAGE):
        return False
    return not any(text in str(error) for text in _NOT_DAMAGE_TEXT)


def reason(error: Exception) -> str:
    """The first line of `error`, at most 200 characters, with its type."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    text = text if len(text) <= 200 else text[:200] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def set_aside(folder: pathlib.Path, into: pathlib.Path) -> pathlib.Path:
    """Move `folder` into `into/` (replacing an earlier copy) on process 0; the new path."""
    target = into / folder.name
    if jax.process_index() == 0:
        into.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        os.replace(folder, target)
    return target

