"""Who can reach the server: this machine over http, or the network over https only.

A loopback ``host`` (the default) serves http to programs on this machine. Any other
address is remote use: it needs a certificate and key (https), so that neither the secret
nor the data cross the network in clear; the original design's secret-on-the-first-line
body is refused there, and the ``Host`` allow-list grows by this machine's names and
``server_names`` (docs/deploy.md).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..auth import check_private_file, read_secret
from ..connection import is_loopback
from ..errors import ConfigError
from ..settings import Settings

WILDCARDS = ("0.0.0.0", "::")
MIN_SECRET_CHARS = 32  # what 'mlbridge token' writes is 43


@dataclass(frozen=True)
class Exposure:
    """The address, the scheme and the names one server answers to."""

    host: str
    remote: bool
    tls_cert: Path | None = None
    tls_key: Path | None = None
    names: tuple[str, ...] = ()  # Host names allowed beyond loopback and the bound address

    @classmethod
    def from_settings(cls, settings: Settings) -> Exposure:
        """Check the address and the TLS files; ConfigError naming the flags to fix."""
        host = settings.host
        check_address(host)
        cert, key = settings.tls_cert, settings.tls_key
        if bool(cert) != bool(key):
            raise ConfigError("https needs both --tls-cert CERT.pem and --tls-key KEY.pem")
        remote = not is_loopback(host)
        if remote and not cert:
            raise ConfigError(
                f"--host {host} listens beyond this machine, which needs https: give "
                "--tls-cert CERT.pem and --tls-key KEY.pem (see docs/deploy.md)"
            )
        if not cert:
            return cls(host, remote)
        cert_path, key_path = Path(cert).expanduser(), Path(key).expanduser()
        for path, flag in ((cert_path, "--tls-cert"), (key_path, "--tls-key")):
            if not path.is_file():
                raise ConfigError(f"{flag} {path}: no such file")
        check_private_file(key_path)  # a key others can read is no longer a secret
        names = remote_names(host, settings.server_names) if remote else ()
        return cls(host, remote, cert_path.absolute(), key_path.absolute(), names)

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    def url(self, port: int) -> str:
        """The URL ``server.json`` gives clients: a wildcard address becomes a name."""
        host = self.host
        if host in WILDCARDS:
            host = self.names[0] if self.names else "localhost"
        return f"{self.scheme}://{f'[{host}]' if ':' in host else host}:{port}"

    def uvicorn_options(self) -> dict[str, Any]:
        if self.tls_cert is None:
            return {}
        return {"ssl_certfile": str(self.tls_cert), "ssl_keyfile": str(self.tls_key)}


def check_address(host: str) -> None:
    """Accept ``localhost`` or an IP address."""
    if host == "localhost":
        return
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(
            f"--host {host!r} is not an IP address; use 127.0.0.1 (this machine), or an "
            "address of this machine with TLS"
        ) from None


def remote_names(host: str, server_names: str) -> tuple[str, ...]:
    """Names a remote client may put in ``Host``: the configured ones, then this machine's."""
    configured = [name.strip().lower() for name in server_names.split(",") if name.strip()]
    own = [socket.getfqdn().lower(), socket.gethostname().lower()]
    return tuple(dict.fromkeys([*configured, *own, host]))


def served_secret(settings: Settings, fresh: str) -> str:
    """The secret to serve: the long-lived one of ``secret_file`` if set, else ``fresh``."""
    if not settings.secret_file:
        return fresh
    path = Path(settings.secret_file).expanduser()
    if not path.exists():
        raise ConfigError(f"--secret-file {path}: no such file; make one with 'mlbridge token'")
    check_private_file(path)
    secret = read_secret(path)
    if len(secret) < MIN_SECRET_CHARS:
        raise ConfigError(
            f"{settings.secret_file} holds a secret of {len(secret)} characters; use at least "
            f"{MIN_SECRET_CHARS} ('mlbridge token --rotate' writes a strong one)"
        )
    return secret
