"""Run the server: bind, serve, publish the connection files, clean up on stop.

Start-up order (clients rely on it): the socket listens and the app is
ready, then the token file is written, then ``server.json``. A client that
sees ``server.json`` can connect at once. Both files go on a clean stop.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import socket
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import uvicorn

from .. import __version__
from ..auth import TokenAuthenticator, new_secret, secure_folder
from ..connection import (
    Connection,
    connection_path,
    find_connection,
    is_live,
    publish,
    republish,
    unpublish,
)
from ..errors import ConfigError
from ..registry import ModelRegistry
from ..settings import Settings
from .app import create_app
from .exposure import Exposure, served_secret
from .files import LOG_FILE, LogBound, hold_lock, lock_paths
from .memory import return_big_buffers
from .reloading import Reloader
from .transport import TransportLimits, guarded_protocol

log = logging.getLogger("mlbridge")
BACKLOG = 2048
SPARE_DESCRIPTORS = 256  # beyond one per connection: model files, threads, the listener


class PublishingServer(uvicorn.Server):
    """A uvicorn server that publishes its connection files once listening (and watches files).

    On SIGTERM/SIGINT uvicorn stops accepting, lets in-flight requests finish within
    ``timeout_graceful_shutdown``, and only then are the files removed.
    """

    def __init__(
        self, config: uvicorn.Config, publication: Publication, reloader: Reloader | None
    ) -> None:
        super().__init__(config)
        self.publication = publication
        self.reloader = reloader  # set when --watch
        self._stop_watching = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self.log_bound: LogBound | None = None  # set when the output may be the detached log
        self._log_keeper: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.started:
            return
        self.publication.write()
        if self.reloader is not None:
            self._watcher = asyncio.create_task(self.reloader.watch(self._stop_watching))
        if self.log_bound is not None and self.log_bound.is_our_output():
            self._log_keeper = asyncio.create_task(self.log_bound.keep(self._stop_watching))

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._stop_watching.set()
        await super().shutdown(sockets)
        self.publication.remove()


def serve(registry: ModelRegistry, settings: Settings) -> None:
    """Serve ``registry`` until SIGINT/SIGTERM; raise ConfigError on bad settings."""
    exposure = Exposure.from_settings(settings)
    secure_folder(settings.home)
    with ExitStack() as held:
        for lock in lock_paths(settings):
            secure_folder(lock.parent)
            held.callback(os.close, hold_lock(lock))
        _serve(registry, settings, exposure)


def _serve(registry: ModelRegistry, settings: Settings, exposure: Exposure) -> None:
    """Serve, with this server's locks held."""
    refuse_running_server(settings.home)
    allow_descriptors(settings.max_connections)
    return_big_buffers()
    secret = served_secret(settings, new_secret())
    listener = bind(settings.host, settings.port)
    connection = Connection(
        url=exposure.url(listener.getsockname()[1]),
        pid=os.getpid(),
        token_file=settings.token_file,
        models=registry.names(),
        version=__version__,
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        ca_file=exposure.tls_cert,
    )
    published = Publication(settings.home, connection, secret)
    authenticator = TokenAuthenticator(secret, settings.token_file)
    server_box: list[PublishingServer] = []  # the shutdown route needs the server made below

    def request_shutdown() -> None:
        server_box[0].should_exit = True  # uvicorn's own graceful path, as on SIGTERM

    app = create_app(
        registry, authenticator, settings, published.update_models, request_shutdown,
        exposure=exposure,
    )  # fmt: skip
    config = uvicorn.Config(
        app,
        http=guarded_protocol(TransportLimits.from_settings(settings)),
        ws="none",  # no WebSocket (the guard refuses upgrades too)
        limit_concurrency=settings.max_connections + 1,  # a backstop: the protocol refuses first
        lifespan="off",
        access_log=False,  # the app logs its own structured line (settings.access_log)
        log_level="info",
        timeout_keep_alive=settings.keep_alive_timeout_s,
        proxy_headers=False,  # no proxy in front: X-Forwarded-* from any client is not trusted
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
        server_header=False,
        **exposure.uvicorn_options(),
    )
    server = PublishingServer(config, published, app.state.reloader if settings.watch else None)
    app.state.service.connections = server.server_state.connections  # uvicorn's open ones
    server.log_bound = LogBound(settings.home / LOG_FILE, settings.log_max_bytes)
    server_box.append(server)
    try:
        server.run(sockets=[listener])
    finally:
        published.remove()
        registry.close()


class Publication:
    """The connection files of this server: written once listening, removed once."""

    def __init__(self, home: Path, connection: Connection, secret: str) -> None:
        self.home = home
        self.connection = connection
        self._secret = secret
        self._written = False

    def write(self) -> None:
        publish(self.home, self.connection, self._secret)
        self._written = True
        log.info("serving %s at %s", ", ".join(self.connection.models), self.connection.url)
        log.info("connection file %s", connection_path(self.home))

    def update_models(self, models: list[str]) -> None:
        """Say the new model list in ``server.json`` (after a reload changed it)."""
        self.connection = replace(self.connection, models=models)
        if self._written:
            republish(self.home, self.connection)

    def remove(self) -> None:
        if self._written:
            self._written = False
            unpublish(self.home, self.connection)


def refuse_running_server(home: Path) -> None:
    """Raise if the connection file of ``home`` names a live server; a stale one is replaced."""
    running = find_connection(home)
    if running is not None and running.pid != os.getpid() and is_live(running):
        raise ConfigError(
            f"a server is already running (pid {running.pid}, see {connection_path(home)}); "
            "stop it with 'mlbridge stop' or set MLBRIDGE_HOME to another folder"
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


def allow_descriptors(connections: int) -> None:
    """Raise the soft limit on open files to fit ``connections`` (up to the hard limit)."""
    wanted = connections + SPARE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < wanted:
            log.warning(
                "only %d open files are allowed (ulimit -n); max_connections %d may not be "
                "reached", target, connections,
            )  # fmt: skip
