"""The server's own files besides the connection files: its locks and its detached log.

- ``<home>/server.lock`` (and ``<token file>.lock`` when the token file lives elsewhere):
  held with ``flock`` while a server serves, so two servers cannot race for one home or
  token file. The lock goes with the process however it ends, so it is never stale.
- ``<home>/server.log``: the output of ``mlbridge serve --detach``; opened 0600, never
  through a symlink, only if it is the user's own regular file; moved to ``server.log.1``
  when it reaches ``log_max_mb`` (at start, and checked every :data:`LOG_CHECK_S` while
  serving), so the two together stay near twice that size.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import stat
from contextlib import suppress
from pathlib import Path

from ..errors import ConfigError
from ..settings import Settings

log = logging.getLogger("mlbridge")
LOCK_FILE = "server.lock"
LOG_FILE = "server.log"
LOG_CHECK_S = 5.0


def lock_paths(settings: Settings) -> list[Path]:
    """The lock files of a server: its home's, and its token file's when that is elsewhere."""
    token = settings.token_file
    paths = [settings.home / LOCK_FILE]
    if token.parent != settings.home:
        paths.append(token.with_name(token.name + ".lock"))
    return paths


def hold_lock(path: Path) -> int:
    """Lock ``path`` (created 0600, never through a symlink) for this process; its descriptor.

    The lock goes with the process, however it ends, so it is never stale. ConfigError
    names the pid of the server holding it.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        descriptor = os.open(path, flags, 0o600)
    except OSError as error:
        raise ConfigError(f"cannot open the lock file {path}: {error.strerror}") from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(descriptor)
        raise ConfigError(
            f"a server is already running (pid {holder}, holding {path}); stop it with "
            "'mlbridge stop', or use another MLBRIDGE_HOME and token file"
        ) from None
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    return descriptor


def open_log(path: Path, max_bytes: int) -> int:
    """Open the detached server's log for appending: 0600, never through a symlink, the
    user's own regular file; moved to ``<log>.1`` first when it has reached ``max_bytes``."""
    info = _lstat(path)
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{path} is not a regular file (a link?); refusing to write the log")
    if info is not None and info.st_size >= max_bytes:
        os.replace(path, path.with_name(path.name + ".1"))
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        descriptor = os.open(path, flags, 0o600)
    except OSError as error:
        raise ConfigError(f"cannot open the log {path}: {error.strerror}") from None
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
        os.close(descriptor)
        raise ConfigError(f"{path} is not a file of yours; refusing to write the log there")
    os.fchmod(descriptor, 0o600)
    return descriptor


class LogBound:
    """Keeps a detached server's log under ``max_bytes``: moved to ``<log>.1`` when full."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes

    def is_our_output(self) -> bool:
        """Whether this process writes its output (stderr) to the log (serve --detach)."""
        info = _lstat(self.path)
        output = os.fstat(2)
        return info is not None and (info.st_dev, info.st_ino) == (output.st_dev, output.st_ino)

    async def keep(self, stop: asyncio.Event) -> None:
        """Check the size every :data:`LOG_CHECK_S` until ``stop``; rotate when full."""
        while not stop.is_set():
            if os.fstat(2).st_size >= self.max_bytes:
                self.rotate()
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), LOG_CHECK_S)

    def rotate(self) -> None:
        """Move the log to ``<log>.1`` and write stdout and stderr to a fresh one."""
        try:
            descriptor = open_log(self.path, self.max_bytes)
        except ConfigError as error:
            log.warning("log not rotated: %s", error.message)
            return
        os.dup2(descriptor, 1)
        os.dup2(descriptor, 2)
        os.close(descriptor)


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return path.lstat()
    except FileNotFoundError:
        return None
