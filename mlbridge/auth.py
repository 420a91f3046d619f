"""The shared secret: written once per start, proved on every request.

Like X11's MIT-MAGIC-COOKIE-1, a client proves it may read a file that only
the user can read. The server writes a fresh 256-bit secret at start-up (or
the long-lived one ``mlbridge token`` made) to the token file (mode 0600,
created atomically, never through a symlink, in a folder no one else can
write) and checks every request against it in constant time. The secret is
never logged.

A client proves it in one of two ways: ``Authorization: Bearer <secret>``, or
a signed request (:func:`sign_request`), where the secret never crosses the
wire: an HMAC-SHA256 over the method, target, time, a fresh nonce and the
body's SHA-256, refused when stale, replayed or altered (docs/security.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, Unauthorized

TOKEN_BYTES = 32  # 256 bits
PROOF_LABEL = b"mlbridge server proof v1\n"
REQUEST_LABEL = b"mlbridge request v1\n"
BEARER = "bearer "
SIGNED = "mlbridge-hmac-sha256 "  # the Authorization scheme of a signed request
SIGNATURE_WINDOW_S = 60  # how far a signed request's time may be from the server's
SIGNED_FIELDS = ("ts", "nonce", "body", "sig")
REMEMBERED_NONCES = 1_000_000  # nonces of one window kept to refuse replays (~150 MB at most)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


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


def provision_secret(path: Path, rotate: bool) -> bool:
    """Write a fresh long-lived secret to ``path`` (0600) unless it has one and not ``rotate``.

    Returns whether it wrote one. A server given this file (``--secret-file``) serves it,
    so copies on client machines keep working across restarts (docs/deploy.md).
    """
    if path.exists() and not rotate:
        check_private_file(path)
        return False
    write_private(path, new_secret() + "\n")
    return True


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


def is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def request_signature(
    secret: str, method: str, target: str, timestamp: str, nonce: str, body_sha256: str
) -> str:
    """HMAC-SHA256 of a request: label, method, target, time, nonce, body hash, one per line."""
    fields = (method.upper(), target, timestamp, nonce, body_sha256)
    message = REQUEST_LABEL + "\n".join(fields).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign_request(
    secret: str, method: str, target: str, body: bytes = b"", now: float | None = None
) -> str:
    """The ``Authorization`` value of a signed request (``target``: path and ``?query``)."""
    timestamp = str(int(time.time() if now is None else now))
    nonce = secrets.token_hex(16)
    body_sha256 = hashlib.sha256(body).hexdigest()
    signature = request_signature(secret, method, target, timestamp, nonce, body_sha256)
    return (
        f"MLBridge-HMAC-SHA256 ts={timestamp}, nonce={nonce}, body={body_sha256}, sig={signature}"
    )


@dataclass(frozen=True)
class SignedClaim:
    """What a signed request's ``Authorization`` header says."""

    timestamp: str
    nonce: str
    body_sha256: str
    signature: str

    @classmethod
    def parse(cls, authorization: str) -> SignedClaim:
        """Read ``ts=.., nonce=.., body=.., sig=..``; Unauthorized saying what is wrong."""
        fields: dict[str, str] = {}
        for part in authorization[len(SIGNED) :].split(","):
            key, _, value = part.strip().partition("=")
            fields[key.strip().lower()] = value.strip()
        missing = [name for name in SIGNED_FIELDS if name not in fields]
        if missing:
            raise Unauthorized(
                f"a signed request needs ts, nonce, body and sig; missing {', '.join(missing)}"
            )
        claim = cls(fields["ts"], fields["nonce"], fields["body"], fields["sig"])
        if not (claim.timestamp.isdigit() and len(claim.timestamp) <= 12):
            raise Unauthorized("ts must be the Unix time in whole seconds")
        if not is_nonce(claim.nonce):
            raise Unauthorized("nonce must be 32 to 128 lowercase hexadecimal digits")
        if not (is_sha256(claim.body_sha256) and is_sha256(claim.signature)):
            raise Unauthorized("body and sig must be 64 lowercase hexadecimal digits each")
        return claim


class ReplayGuard:
    """Nonces of signed requests seen within the signature window: each is taken once."""

    def __init__(self, window_s: float = SIGNATURE_WINDOW_S, capacity: int = REMEMBERED_NONCES):
        self.window_s = window_s
        self.capacity = capacity
        self._seen: OrderedDict[str, float] = OrderedDict()  # nonce -> when seen, oldest first

    def take(self, nonce: str, now: float) -> bool:
        """Whether ``nonce`` is new (and from now on seen); False for a replay."""
        while self._seen and next(iter(self._seen.values())) < now - 2 * self.window_s:
            self._seen.popitem(last=False)
        if nonce in self._seen or len(self._seen) >= self.capacity:
            return False  # a replay, or more fresh nonces than any honest client sends
        self._seen[nonce] = now
        return True


class TokenAuthenticator:
    """Checks a presented secret, or a request's signature, against the server's secret."""

    def __init__(self, secret: str, token_file: Path) -> None:
        self._secret = secret.encode()
        self.token_file = token_file
        self.replays = ReplayGuard()

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

    def check_signed(
        self, authorization: str, method: str, target: str, now: float | None = None
    ) -> SignedClaim:
        """Check a signed request's header (its body is checked as it arrives: check_body)."""
        claim = SignedClaim.parse(authorization)
        now = time.time() if now is None else now
        skew = int(claim.timestamp) - now
        if abs(skew) > SIGNATURE_WINDOW_S:
            raise Unauthorized(
                f"the signature's time is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'}"
                f" the server's clock (at most {SIGNATURE_WINDOW_S} s): a replay, or a clock "
                "to set right"
            )
        expected = request_signature(
            self._secret.decode(), method, target, claim.timestamp, claim.nonce, claim.body_sha256
        )
        if not hmac.compare_digest(expected, claim.signature):
            raise Unauthorized(
                f"wrong signature: sign with the secret from {self.token_file}, over the "
                "method, the path and query as sent, ts, nonce and the body's SHA-256"
            )
        if not self.replays.take(claim.nonce, now):
            raise Unauthorized("this signed request was seen before (a replay); sign each anew")
        return claim

    @staticmethod
    def check_body(claim: SignedClaim, body_sha256: str) -> None:
        """Raise Unauthorized unless the body received is the one signed."""
        if not hmac.compare_digest(body_sha256, claim.body_sha256):
            raise Unauthorized(
                "the body does not match its signature (altered after signing?): sign the "
                "SHA-256 of the exact bytes sent"
            )

    def proof(self, nonce: str) -> str:
        """:func:`server_proof` with this server's secret."""
        return server_proof(self._secret.decode(), nonce)


def is_signed(authorization: str | None) -> bool:
    """Whether an ``Authorization`` value is a signed request's."""
    return authorization is not None and authorization[: len(SIGNED)].lower() == SIGNED


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header ("" for none), or None."""
    if authorization and authorization[: len(BEARER)].lower() == BEARER:
        return authorization[len(BEARER) :].strip()
    if authorization and authorization.strip().lower() == BEARER.strip():
        return ""  # "Bearer " whose blank the HTTP parser dropped: an empty secret
    return None
