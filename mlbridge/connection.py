"""The connection file ``server.json`` and the token file: the one owner of both.

A running server publishes, in its home folder (``$MLBRIDGE_HOME``, default
``~/.mlbridge``), first the token file (the secret) and then ``server.json``
(URL, pid, token file path, model names). Clients, the CLI and the tests
find the server through :func:`read_connection`; nothing else parses the file.
Both files are written atomically with mode 0600 (see :mod:`mlbridge.auth`).
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .auth import (
    check_private_file,
    check_private_folder,
    read_secret,
    write_json_private,
    write_private,
)
from .errors import ConfigError

CONNECTION_FILE = "server.json"
POLL_S = 0.05


@dataclass(frozen=True)
class Connection:
    """What ``server.json`` says about one running server."""

    url: str
    pid: int
    token_file: Path
    models: list[str] = field(default_factory=list)
    version: str = ""
    started: str = ""
    ca_file: Path | None = None  # an https server's certificate, for clients to trust

    def secret(self) -> str:
        """The secret from the token file (refused if others can read it)."""
        return read_secret(self.token_file)

    def to_dict(self) -> dict[str, Any]:
        document = {**asdict(self), "token_file": str(self.token_file)}
        if self.ca_file is None:
            del document["ca_file"]
        else:
            document["ca_file"] = str(self.ca_file)
        return document


def connection_path(home: Path) -> Path:
    """Where the connection file of the server of ``home`` lives."""
    return home / CONNECTION_FILE


def publish(home: Path, connection: Connection, secret: str) -> None:
    """Write the token file, then ``server.json`` (clients rely on this order)."""
    write_private(connection.token_file, secret + "\n")
    write_json_private(connection_path(home), connection.to_dict())


def republish(home: Path, connection: Connection) -> None:
    """Rewrite ``server.json`` (the models served changed); the token file stays."""
    write_json_private(connection_path(home), connection.to_dict())


def unpublish(home: Path, connection: Connection) -> None:
    """Remove both files, unless another server has replaced them since."""
    current = find_connection(home)
    if current is not None and current.pid == connection.pid:
        connection_path(home).unlink(missing_ok=True)
        connection.token_file.unlink(missing_ok=True)


def read_connection(home: Path) -> Connection:
    """The connection of the server of ``home``, trusted only if it can be trusted.

    The home folder and the file must be the user's own and closed to others (anyone who
    could plant them could learn the secret from a client); the URL must be https, or http
    on a loopback address. ConfigError says why there is no usable connection.
    """
    path = connection_path(home)
    try:
        check_private_folder(home)
        check_private_file(path)
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"no mlbridge server found ({path} does not exist); start one with 'mlbridge serve'"
        ) from None
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read {path}: {error}") from None
    return _parse(path, document)


def find_connection(home: Path) -> Connection | None:
    """The connection of ``home``, or None when there is no readable one."""
    try:
        return read_connection(home)
    except ConfigError:
        return None


def _parse(path: Path, document: Any) -> Connection:
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    url, pid, token_file = document.get("url"), document.get("pid"), document.get("token_file")
    if not isinstance(url, str) or not isinstance(pid, int) or not isinstance(token_file, str):
        raise ConfigError(f"{path}: expected string 'url', integer 'pid', string 'token_file'")
    check_url(url, path)
    ca_file = document.get("ca_file")
    models = document.get("models", [])
    return Connection(
        url=url,
        pid=pid,
        token_file=Path(token_file),
        models=[str(m) for m in models] if isinstance(models, list) else [],
        version=str(document.get("version", "")),
        started=str(document.get("started", "")),
        ca_file=Path(ca_file) if isinstance(ca_file, str) and ca_file else None,
    )


def check_url(url: str, where: Path | str = "the URL") -> None:
    """Accept an https URL, or an http URL on a loopback address; no control characters."""
    parts = urlsplit(url)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url) or parts.scheme not in ("http", "https"):
        raise ConfigError(f"{where}: {url!r} is not an http(s) URL; refusing to use it")
    if not parts.hostname:
        raise ConfigError(f"{where}: {url!r} names no host")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigError(
            f"{where}: {url!r} is not on this machine (a loopback address) and not https; "
            "refusing to send it the secret in clear (use https for a remote server)"
        )


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine: localhost, 127.0.0.0/8 or ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def wait_for_server(
    home: Path, pid: int, timeout_s: float, exited: Callable[[], int | None]
) -> Connection:
    """Wait until ``server.json`` names ``pid``; ``exited()`` returns the child's status or None.

    Raises ConfigError when the child exits first or the time runs out.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        connection = find_connection(home)
        if connection is not None and connection.pid == pid:  # not a stale earlier file
            return connection
        status = exited()
        if status is not None:
            raise ConfigError(f"the server exited (status {status}) before it was ready")
        time.sleep(POLL_S)
    raise ConfigError(f"the server did not start within {timeout_s:g} s")


def wait_for_exit(home: Path, pid: int, timeout_s: float) -> bool:
    """Wait until the server ``pid`` is gone or has removed its connection file."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        current = find_connection(home)
        if current is None or current.pid != pid or not process_alive(pid):
            return True
        time.sleep(POLL_S)
    return False


def is_live(connection: Connection) -> bool:
    """Whether the named process runs and its URL accepts connections (pids get reused)."""
    return process_alive(connection.pid) and answers(connection.url)


def answers(url: str) -> bool:
    """Whether something accepts TCP connections at ``url``."""
    parts = urlsplit(url)
    if not parts.hostname or not parts.port:
        return False
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=1).close()
    except OSError:
        return False
    return True


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
