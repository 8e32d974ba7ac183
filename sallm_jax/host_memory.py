"""Freed arrays go back to the operating system: glibc's malloc threshold for mmap fixed at 64 KiB.

XLA's CPU backend allocates every buffer, weights and a program's temporaries alike, with the C
library's malloc. glibc raises its mmap threshold to the size of each mapped block it frees (up
to 32 MiB), so after the first large free, buffers of a few MiB to 32 MiB come from the heap,
whose freed space stays resident while a later block sits above it. With a bfloat16 model that
is most of a decoder layer's kernels: granite_speech_2b at full depth held 1.5 GB more during an
SFT step (8.53 against 7.05 GB resident, 6.02 GB of weights). A fixed threshold maps every block
of 64 KiB or more on its own and unmaps it when freed. Off glibc nothing changes.
"""

from __future__ import annotations

import ctypes
import sys

M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
MMAP_THRESHOLD_BYTES = 64 * 1024


def return_freed_arrays() -> bool:
    """Fixes glibc's mmap threshold (`mallopt`, as MALLOC_MMAP_THRESHOLD_ would at start-up) for
    the rest of the process; True when it was set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # another C library (musl)
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
