"""Giving the memory of large upstream bodies back to the system once they are freed.

An upstream body is read in 64 KiB chunks up to the 8 MiB cap (``upstream``). Freed, those
chunks go back to glibc's malloc, not to the system: its heap keeps the pages for later
allocations, and smaller objects allocated among them keep the heap from shrinking at its top.
So after an upstream answered bodies that inflate past the cap (a gzip bomb: every account of
that provider reading up to 8 MiB at once), the exporter's resident memory stayed some 30 MB
above its level before, for as long as the process ran, although Python held none of it
(``tracemalloc``: 0.2 MB live afterwards). ``malloc_trim(0)`` hands such free pages back
(measured: 85 MB -> 57 MB, the level before the bodies).

It runs once, ``TRIM_DELAY_SECONDS`` after the last large body: a refresh's bodies are freed
by then, a burst of them costs one trim (0.4 ms measured, at 60 MB resident), and none follows
the ordinary answers of tens of kilobytes (a legitimately large one, such as a big account's
Matrix full sync, is followed by one too). Where the C library has no ``malloc_trim`` (musl,
macOS), this does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Callable
from typing import Final

# A body at least this large (as read, decompressed) is followed by a trim; the ordinary
# answers of every built-in provider are tens of kilobytes.
LARGE_BODY_BYTES: Final = 1024 * 1024
TRIM_DELAY_SECONDS: Final = 1.0


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class HeapTrimmer:
    """Trims the heap once, a moment after the last of a run of large bodies."""

    def __init__(self) -> None:
        self._trim = _malloc_trim()
        self._pending: asyncio.TimerHandle | None = None

    def body_read(self, size: int) -> None:
        """Note a body of ``size`` bytes (read whole, or as far as the cap let it)."""
        if size < LARGE_BODY_BYTES or self._trim is None:
            return
        if self._pending is not None:
            self._pending.cancel()
        self._pending = asyncio.get_running_loop().call_later(TRIM_DELAY_SECONDS, self._run)

    def _run(self) -> None:
        self._pending = None
        if self._trim is not None:
            self._trim(0)

    def close(self) -> None:
        """Drop a trim still pending (the loop is closing)."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
