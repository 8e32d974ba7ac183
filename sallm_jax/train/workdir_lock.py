"""One writer per work directory: an exclusive `flock` on `<workdir>/.lock`, taken by process 0. The
kernel releases it however the holder dies; the file names the holder (pid, host, start)."""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import socket
import time


class WorkdirLocked(RuntimeError):
    """Another run holds the work directory."""


class WorkdirLock:
    """Context manager holding the lock; raises `WorkdirLocked` naming the holder."""

    def __init__(self, workdir: pathlib.Path):
        self.path = workdir / ".lock"
        self.fd: int | None = None

    def __enter__(self) -> WorkdirLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "{}"
            os.close(fd)
            raise WorkdirLocked(
                f"{self.path.parent} is in use by another run ({holder}); wait for it to finish "
                "or stop it, or give this run another --workdir") from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the lock
            self.fd = None
