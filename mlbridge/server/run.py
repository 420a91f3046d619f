"""Run the server: bind, serve, publish the connection files, clean up on stop.

Start-up order (clients rely on it): the socket listens and the app is
ready, then the token file is written, then ``server.json``. A client that
sees ``server.json`` can connect at once. Both files go on a clean stop.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import os
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import uvicorn

from .. import __version__
from ..auth import TokenAuthenticator, new_secret, secure_folder, write_json_private, write_private
from ..errors import ConfigError
from ..registry import ModelRegistry
from ..settings import Settings
from .app import create_app

log = logging.getLogger("mlbridge")
BACKLOG = 2048


class PublishingServer(uvicorn.Server):
    """A uvicorn server that writes the connection files once it is listening."""

    def __init__(self, config: uvicorn.Config, publish, unpublish) -> None:
        super().__init__(config)
        self._publish = publish
        self._unpublish = unpublish

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._publish()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._unpublish()
        await super().shutdown(sockets)


def serve(registry: ModelRegistry, settings: Settings) -> None:
    """Serve ``registry`` until SIGINT/SIGTERM; raise ConfigError on bad settings."""
    require_loopback(settings.host)
    secure_folder(settings.home)
    refuse_running_server(settings.connection_file)
    listener = bind(settings.host, settings.port)
    secret = new_secret()
    app = create_app(registry, TokenAuthenticator(secret, settings.token_file), settings)
    config = uvicorn.Config(
        app,
        lifespan="off",
        access_log=settings.access_log,
        log_level="info",
        timeout_keep_alive=30,
        server_header=False,
    )
    url = f"http://{_url_host(settings.host)}:{listener.getsockname()[1]}"
    published = ConnectionFiles(settings, url, secret, registry.names())
    server = PublishingServer(config, published.write, published.remove)
    try:
        server.run(sockets=[listener])
    finally:
        published.remove()
        registry.close()


class ConnectionFiles:
    """The token file and ``server.json`` of one running server."""

    def __init__(self, settings: Settings, url: str, secret: str, models: list[str]) -> None:
        self.settings = settings
        self.document = {
            "url": url,
            "pid": os.getpid(),
            "token_file": str(settings.token_file),
            "models": models,
            "version": __version__,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        self._secret = secret
        self._written = False

    def write(self) -> None:
        write_private(self.settings.token_file, self._secret + "\n")
        write_json_private(self.settings.connection_file, self.document)
        self._written = True
        log.info("serving %s at %s", ", ".join(self.document["models"]), self.document["url"])
        log.info("connection file %s", self.settings.connection_file)

    def remove(self) -> None:
        """Remove both files, unless another server has replaced them since."""
        if not self._written:
            return
        self._written = False
        if read_connection(self.settings.connection_file).get("pid") == os.getpid():
            self.settings.connection_file.unlink(missing_ok=True)
            self.settings.token_file.unlink(missing_ok=True)


def read_connection(path: Path) -> dict:
    """The connection file's document, or {} if absent or unreadable."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def refuse_running_server(connection_file: Path) -> None:
    """Raise if ``connection_file`` names a live server; a stale one is replaced."""
    document = read_connection(connection_file)
    pid, url = document.get("pid"), document.get("url")
    if isinstance(pid, int) and pid != os.getpid() and process_alive(pid) and answers(url):
        raise ConfigError(
            f"a server is already running (pid {pid}, see {connection_file}); "
            "stop it with 'mlbridge stop' or set MLBRIDGE_HOME to another folder"
        )


def answers(url: object) -> bool:
    """Whether something accepts connections at ``url`` (a reused pid is not a server)."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if not parts or not parts.hostname or not parts.port:
        return False
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=1).close()
    except OSError:
        return False
    return True


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def require_loopback(host: str) -> None:
    """Refuse any address that is not loopback (remote use needs TLS; not yet)."""
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise ConfigError(f"--host {host!r} is not an IP address; use 127.0.0.1 or ::1") from None
    if not loopback:
        raise ConfigError(
            f"--host {host} is not a loopback address; mlbridge serves this machine only "
            "(127.0.0.1 or ::1) until remote use with TLS is supported"
        )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0 picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        if error.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is already in use; choose another with --port, "
                "or --port 0 for any free port"
            ) from None
        raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    listener.listen(BACKLOG)
    return listener


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
