"""Give memory back to the system after big requests (glibc).

glibc's malloc raises its mmap threshold as big blocks are freed, so after one request of
10,000 images the next big buffers come from the heap, which it rarely shrinks: the
server's RSS stays 60–110 MB above idle for good. A fixed threshold keeps every block of
:data:`MMAP_THRESHOLD` or more in its own mapping, returned when freed; small blocks (every
single-image request's) are unaffected. Measured in docs/performance.md.

Fixing it also fixes the heap's trim threshold, at glibc's default of 128 KiB: the top of
the heap was then given back after every temporary of 128 KiB to 1 MiB, and faulted in
again by the next (a 10,000-image V2 JSON body's decode makes dozens: 30% of its time).
The heap now keeps up to :data:`TRIM_THRESHOLD` free at its top. Worker threads, where big
bodies are decoded, would each get an arena of their own, trimmed to the bone whatever the
threshold; they share the main one (Python's small objects have their own allocator, so
the threads seldom meet in malloc).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger("mlbridge")
# mallopt's parameter numbers, from glibc's malloc.h
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
MMAP_THRESHOLD = 1 << 20  # 1 MiB: a request of ~300 images or more
TRIM_THRESHOLD = 8 << 20  # free memory the heap keeps at its top: at most 8 MiB of RSS


def return_big_buffers() -> bool:
    """Fix glibc's mmap and trim thresholds and its arenas to one; whether they were set
    (False elsewhere than glibc)."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        done = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
        done = done and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
        done = done and bool(libc.mallopt(M_ARENA_MAX, 1))
    except (OSError, AttributeError):
        done = False
    if not done:
        log.warning("could not fix malloc's mmap threshold: RSS may stay high after big requests")
    return done
