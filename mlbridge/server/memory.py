"""Give memory back to the system after big requests (glibc).

glibc's malloc raises its mmap threshold as big blocks are freed, so after one request of
10,000 images the next big buffers come from the heap, which it rarely shrinks: the
server's RSS stays 60–110 MB above idle for good. A fixed threshold keeps every block of
:data:`MMAP_THRESHOLD` or more in its own mapping, returned when freed; small blocks (every
single-image request's) are unaffected. Measured in docs/performance.md.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger("mlbridge")
M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h
MMAP_THRESHOLD = 1 << 20  # 1 MiB: a request of ~300 images or more


def return_big_buffers() -> bool:
    """Fix glibc's mmap threshold; whether it was set (False elsewhere than glibc)."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        done = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        done = False
    if not done:
        log.warning("could not fix malloc's mmap threshold: RSS may stay high after big requests")
    return done
