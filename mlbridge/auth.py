"""The shared secret: written once per start, proved on every request.

Like X11's MIT-MAGIC-COOKIE-1, a client proves it may read a file that only
the user can read. The server writes a fresh 256-bit secret at start-up to
the token file (mode 0600, created atomically, never through a symlink, in
a folder no one else can write) and checks every request against it in
constant time. The secret is never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from .errors import ConfigError, Unauthorized

TOKEN_BYTES = 32  # 256 bits
PROOF_LABEL = b"mlbridge server proof v1\n"
BEARER = "bearer "


def new_secret() -> str:
    """A fresh URL-safe secret of 256 bits."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def secure_folder(folder: Path) -> None:
    """Create ``folder`` (0700) if missing; refuse one that others may write to."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_private_folder(folder)


def check_private_folder(folder: Path) -> None:
    """Refuse a folder that is a symlink, someone else's, or writable by others."""
    _check_owned(folder, stat.S_IWGRP | stat.S_IWOTH, "writable by others", "chmod go-w")


def check_private_file(path: Path) -> None:
    """Refuse a file that is a symlink, someone else's, or readable or writable by others."""
    _check_owned(path, stat.S_IRWXG | stat.S_IRWXO, "open to others", "chmod 600")


def _check_owned(path: Path, forbidden: int, problem: str, fix: str) -> None:
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        raise ConfigError(f"{path} is a symbolic link; refusing to trust it with secrets")
    if info.st_uid != os.getuid():
        raise ConfigError(f"{path} belongs to another user; refusing to trust it with secrets")
    if info.st_mode & forbidden:
        mode = stat.S_IMODE(info.st_mode)
        raise ConfigError(f"{path} is {problem} (mode {mode:o}); run: {fix} {path}")


def write_private(path: Path, text: str) -> None:
    """Atomically replace ``path`` with ``text``, mode 0600 from the first byte."""
    secure_folder(path.parent)
    if path.is_symlink():
        raise ConfigError(f"{path} is a symbolic link; refusing to follow it")
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    descriptor = os.open(temporary, flags, 0o600)
    try:
        with os.fdopen(descriptor, "w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_json_private(path: Path, document: dict[str, Any]) -> None:
    """Write a JSON document with :func:`write_private`."""
    write_private(path, json.dumps(document, indent=2) + "\n")


def read_secret(path: Path) -> str:
    """Read a token file; refuse one that others can read."""
    try:
        info = path.stat()
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read the token file {path}: {error.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path} is readable by others; run: chmod 600 {path}")
    return text.strip()


def server_proof(secret: str, nonce: str) -> str:
    """The server's proof that it knows ``secret``: HMAC-SHA256 of a client's nonce.

    A client checks it before sending the secret, so a stranger that took over a dead
    server's port learns nothing. The label keeps these MACs apart from any other use.
    """
    message = PROOF_LABEL + nonce.encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def is_nonce(text: str) -> bool:
    """Whether ``text`` is a client nonce: 32 to 128 hexadecimal digits."""
    return 32 <= len(text) <= 128 and all(c in "0123456789abcdef" for c in text)


class TokenAuthenticator:
    """Checks a presented secret against the server's, in constant time."""

    def __init__(self, secret: str, token_file: Path) -> None:
        self._secret = secret.encode()
        self.token_file = token_file

    def check(self, presented: str | None) -> None:
        """Raise Unauthorized unless ``presented`` is the secret."""
        if presented is None:
            raise Unauthorized(
                f"missing secret: send 'Authorization: Bearer <secret>' with the secret from "
                f"{self.token_file}"
            )
        if not self.matches(presented):
            raise Unauthorized(f"wrong secret: read the current one from {self.token_file}")

    def matches(self, presented: str) -> bool:
        return secrets.compare_digest(presented.strip().encode(), self._secret)

    def proof(self, nonce: str) -> str:
        """:func:`server_proof` with this server's secret."""
        return server_proof(self._secret.decode(), nonce)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if authorization and authorization[: len(BEARER)].lower() == BEARER:
        return authorization[len(BEARER) :].strip()
    return None
