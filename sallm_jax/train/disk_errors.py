"""Checkpoint and parameter writes that fail for want of disk (no space, no permission, read-only),
raised once as `DiskWriteError`; `orbax_log_filter` drops the copies Orbax's threads log."""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import re
import shutil
from collections.abc import Iterator

import jax

from sallm_jax.runtime.user_errors import UserError

_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")


class DiskWriteError(UserError, OSError):
    """The disk refused a checkpoint or parameters; the one line names the path and space needed."""


def os_error_code(error: BaseException | None) -> int | None:
    """The errno behind `error` or its causes (OSError's, TensorStore's quoted one); else None."""
    while error is not None:
        if isinstance(error, OSError) and error.errno:
            return error.errno
        if found := _OS_ERROR_CODE.search(str(error)):
            return int(found.group(1))
        error = error.__cause__ or error.__context__
    return None


def megabytes(size: int) -> str:
    return f"{size / 2**20:,.1f} MB"


def free_bytes(path: pathlib.Path) -> int:
    """Free bytes on the file system holding `path` (its nearest existing folder)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def write_failure(what: str, path: pathlib.Path, needed: int, code: int) -> str:
    """The message for a write of `what` (`needed` bytes) to `path` failed with OS error `code`."""
    return (f"cannot write {what} to {path}: {os.strerror(code)}; it needs about "
            f"{megabytes(needed)}, and {megabytes(free_bytes(path))} is free there. Free some "
            "space (or give a --workdir on a disk that has it) and run the same command again: "
            "it resumes from the last complete checkpoint")


def tree_bytes(tree) -> int:
    """Bytes of the arrays of `tree` (their global size)."""
    return sum(leaf.nbytes for leaf in jax.tree.leaves(tree) if hasattr(leaf, "nbytes"))


@contextlib.contextmanager
def naming_the_disk(what: str, path: pathlib.Path, needed: int) -> Iterator[None]:
    """Re-raise an error inside as `DiskWriteError` when an OS error is behind it."""
    try:
        yield
    except Exception as error:
        code = os_error_code(error)
        if code is None:
            raise
        raise DiskWriteError(write_failure(what, path, needed, code)) from error


def orbax_log_filter(record: logging.LogRecord) -> bool:
    """Drop Orbax threads' logs of a failed write (the caller raises it as `DiskWriteError`)."""
    return not ("orbax" in record.pathname and record.exc_info
                and os_error_code(record.exc_info[1]) is not None)
