"""Freed memory goes back to the operating system: glibc's mmap threshold fixed at 64 KiB, and the
heap trimmed after each XLA compilation.

XLA's CPU backend allocates every buffer, weights and a program's temporaries alike, with the C
library's malloc. glibc raises its mmap threshold to the size of each mapped block it frees (up
to 32 MiB), so after the first large free, buffers of a few MiB to 32 MiB come from the heap,
whose freed space stays resident while a later block sits above it. With a bfloat16 model that
is most of a decoder layer's kernels: granite_speech_2b at full depth held 1.5 GB more during an
SFT step (8.53 against 7.05 GB resident, 6.02 GB of weights). A fixed threshold maps every block
of 64 KiB or more on its own and unmaps it when freed.

The compiler's own allocations are small and many: compiling the LoRA gradient of
granite_speech_2b leaves about 300 MB freed but resident on the heap, which the next step's
buffers then sit beside. `malloc_trim` after each compilation returns it. Off glibc nothing
changes.
"""

from __future__ import annotations

import ctypes
import functools
import sys

import jax

M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
MMAP_THRESHOLD_BYTES = 64 * 1024
# The event JAX records when XLA has compiled a program (or read it from the compilation cache).
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # another C library (musl)
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def return_freed_arrays() -> bool:
    """Fixes glibc's mmap threshold (`mallopt`, as MALLOC_MMAP_THRESHOLD_ would at start-up) for
    the rest of the process; True when it was set."""
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


@functools.cache
def trim_after_compiles() -> bool:
    """From now on, trims the heap (`malloc_trim(0)`) each time XLA finishes compiling a program;
    True on glibc. Registers once however often it is called."""
    libc = _glibc()
    if libc is None:
        return False

    def trim(event: str, duration: float, **kwargs) -> None:
        if event == BACKEND_COMPILE_EVENT:
            libc.malloc_trim(0)

    jax.monitoring.register_event_duration_secs_listener(trim)
    return True
