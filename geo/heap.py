"""Keep freed memory from piling up in a long mapping run (glibc's malloc, Linux).

A mapping run allocates and frees arrays of a few hundred kB to tens of MB in several threads
(tile strips, batches, model outputs). glibc serves blocks above its *mmap threshold* with their
own mappings, returned to the system on free, but raises that threshold to the size of every such
block freed (up to 32 MB), after which same-sized blocks come from the heap and stay there when
freed: resident memory then grows over a run. :func:`return_freed_memory` fixes the threshold at
``MMAP_THRESHOLD`` bytes and trims the heap whenever ``TRIM_THRESHOLD`` bytes are free at its top,
as ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` would. Measured on a mapping run with the
torch backend: about 60 MB less peak resident memory, no change in speed (docs/performance.md).
Elsewhere (another C library, macOS, Windows) it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameter numbers (glibc malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 * 1024  # bytes: larger blocks get their own mapping, returned when freed
TRIM_THRESHOLD = 1024 * 1024  # bytes free at the heap's top before it is given back


def return_freed_memory() -> bool:
    """Set glibc's thresholds (module doc) for this process; True when they were set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
