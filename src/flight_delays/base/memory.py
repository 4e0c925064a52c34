"""Handing freed memory back to the operating system, between the steps of a
one-process run and before the train step's worker threads start.

Two allocators keep what a program frees, for reuse, instead of returning it: pyarrow's
memory pool (mimalloc) keeps the pages it decoded Parquet into, and glibc keeps freed
heap blocks mapped until it is asked to trim (its mmap threshold rises to the size of
the blocks freed, so a large window's frames end up on the heap). glibc also gives each
thread an arena of its own: what the main thread freed cannot be reused by the train
step's booster threads, and stays resident while they fit. Measured at the 365-day
window in docs/benchmarks.md ("The 365-day window: memory of the train step").
"""

from __future__ import annotations

import contextlib
import ctypes
import sys


def release_freed() -> None:
    """Return what pyarrow's pool and glibc's heap hold free to the OS. Only libraries
    already loaded are touched; a libc without ``malloc_trim`` (not glibc) is skipped.
    Costs a few milliseconds; the memory still in use is not touched."""
    arrow = sys.modules.get("pyarrow")
    if arrow is not None:
        arrow.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: not glibc
        ctypes.CDLL(None).malloc_trim(0)
