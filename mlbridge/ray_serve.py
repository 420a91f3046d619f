"""Serve on Ray Serve: the same app in every replica, found by clients the same way.

``mlbridge serve --ray`` runs a driver process that:

1. joins the Ray cluster at ``ray_address``, or starts a local one on 127.0.0.1
   (``ray_cpus`` CPUs, a ``ray_object_store_mb`` object store) that it owns;
2. starts Serve's HTTP proxy on ``host:port`` (loopback only: it serves plain HTTP;
   a proxy that already listens elsewhere is refused);
3. deploys the app with ``replicas`` replicas (autoscaling up to ``max_replicas``):
   each replica builds its own registry and app from the model paths
   (:func:`build_app`; onnxruntime sessions do not pickle) and checks the secret itself,
   because Serve's proxy has no data-plane authentication;
4. writes the token file and ``server.json`` (:class:`~mlbridge.server.run.Publication`)
   with its own pid, which every replica reports as the server's;
5. waits for SIGTERM/SIGINT or ``POST /v2/shutdown`` (a replica tells the driver
   through a small Ray actor), then deletes the deployment, removes the files, and
   stops the cluster if it started it.

The secret reaches the replicas as a deployment argument, so it is stored in the
cluster's control plane (GCS); whoever may use that control plane (Ray's token auth)
can read it, as they can run any code on the cluster. Dynamic batching is mlbridge's
own, inside each replica (``replica_max_ongoing`` bounds how many requests a replica
may merge).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from starlette.applications import Starlette

from . import __version__
from .auth import TokenAuthenticator, new_secret, secure_folder
from .connection import Connection, is_loopback
from .errors import ConfigError, MissingDependency
from .registry import discover, load_registry
from .server.app import create_app
from .server.run import Publication, refuse_running_server
from .settings import Settings

log = logging.getLogger("mlbridge")
APP_NAME = "mlbridge"
DEPLOYMENT_NAME = "MLBridge"
ROUTE_PREFIX = "/"
MIB = 1024 * 1024
POLL_S = 0.5
# Ray's single-machine mode ("0"): the node's address is 127.0.0.1, so its GCS, raylet and
# object manager listen on loopback. Read when ray is first imported.
LOOPBACK_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
RAISED = re.compile(r"^\s*((?:[\w.]+\.)?[A-Z]\w*(?:Error|Exception|Dependency): .+)$", re.MULTILINE)


@dataclass(frozen=True)
class ReplicaPlan:
    """What each replica builds its app from; pickled to the replicas (paths, not sessions)."""

    models: tuple[Path, ...]  # absolute; empty: the demo models
    settings: Settings
    secret: str = field(repr=False)  # never in a log line or an error message
    server_pid: int = 0  # the driver's pid: what `mlbridge stop` expects the server to say


def build_app(plan: ReplicaPlan, request_stop: Callable[[], None]) -> Starlette:
    """The mlbridge app of one replica: its own registry, the shared secret."""
    settings = plan.settings
    registry = load_registry(list(plan.models), threads=settings.threads, strict=settings.strict)
    if not len(registry):
        raise ConfigError("no model could be loaded; nothing to serve")
    authenticator = TokenAuthenticator(plan.secret, settings.token_file)
    return create_app(
        registry, authenticator, settings, request_shutdown=request_stop, server_pid=plan.server_pid
    )


def serve_on_ray(models: list[Path], settings: Settings) -> None:
    """Deploy the models on Ray Serve and publish the connection files; return once stopped."""
    plan = _plan(models, settings)
    started = connect(settings)
    ray, serve = _ray()
    try:
        url = start_proxy(serve, settings)
        _refuse_running_app(serve, settings)
        stop = _stop_signal_class(ray).remote()
        names = _deploy(serve, plan, stop)
        connection = Connection(
            url, os.getpid(), settings.token_file, names, __version__,
            time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )  # fmt: skip
        publication = Publication(settings.home, connection, plan.secret)
        try:
            publication.write()
            wait_for_stop(ray, stop)
        finally:
            _delete_app(serve)
            publication.remove()
    finally:
        disconnect(started)


def _plan(models: list[Path], settings: Settings) -> ReplicaPlan:
    """Check what can be checked here, before any Ray process starts."""
    if not is_loopback(settings.host):
        raise ConfigError(
            f"--host {settings.host} is not a loopback address; with --ray the proxy serves "
            "plain HTTP, so it listens on this machine only (127.0.0.1 or ::1)"
        )
    if settings.watch:
        raise ConfigError(
            "--watch is not available with --ray: each replica would reload on its own; "
            "redeploy instead ('mlbridge stop', then 'mlbridge serve --ray')"
        )
    if settings.replicas < 1 or settings.max_replicas < 0:
        raise ConfigError("--replicas must be at least 1 and --max-replicas at least 0")
    secure_folder(settings.home)
    refuse_running_server(settings.home)
    paths = tuple(path.resolve() for path in models)  # replicas resolve them on their node
    if paths and not discover(list(paths)):
        raise ConfigError(f"no model files in {', '.join(map(str, paths))}; nothing to serve")
    return ReplicaPlan(paths, settings, new_secret(), os.getpid())


def _ray() -> tuple[ModuleType, ModuleType]:
    try:
        import ray
        from ray import serve
    except ImportError:
        raise MissingDependency("ray[serve]", "ray", "serving on Ray Serve (--ray)") from None
    return ray, serve


def connect(settings: Settings) -> bool:
    """Join ``ray_address``, or start a local cluster on 127.0.0.1; True if this one started it."""
    if settings.ray_address:
        ray, _ = _ray()
        try:
            ray.init(address=settings.ray_address)
        except (ConnectionError, RuntimeError) as error:
            raise ConfigError(
                f"cannot join the Ray cluster at {settings.ray_address}: {error} (a cluster with "
                "token auth also needs RAY_AUTH_MODE=token and its token; see docs/deploy.md)"
            ) from None
        return False
    os.environ[LOOPBACK_CLUSTER_ENV] = "0"  # before `import ray`, and inherited by the cluster
    ray, _ = _ray()
    ray.init(
        address="local",
        num_cpus=settings.ray_cpus or None,
        object_store_memory=settings.ray_object_store_mb * MIB,
        include_dashboard=False,
    )
    needed = settings.replicas * settings.replica_cpus
    available = ray.cluster_resources().get("CPU", 0)
    if needed > available:
        ray.shutdown()
        raise ConfigError(
            f"{settings.replicas} replicas of {settings.replica_cpus:g} CPU need {needed:g} CPUs; "
            f"the local Ray cluster has {available:g} (set MLBRIDGE_RAY_CPUS or "
            "MLBRIDGE_REPLICA_CPUS)"
        )
    return True


def disconnect(started: bool) -> None:
    """Leave the cluster; stop Serve and the cluster too when this process started them."""
    ray, serve = _ray()
    if started:
        serve.shutdown()
    ray.shutdown()


def start_proxy(serve: ModuleType, settings: Settings) -> str:
    """Start Serve's HTTP proxy on ``host:port`` (if Serve is not running yet); its URL.

    A cluster whose Serve already runs keeps its proxy: it must listen on loopback.
    """
    port = settings.port or free_port(settings.host)
    serve.start(proxy_location="HeadOnly", http_options={"host": settings.host, "port": port})
    from ray.serve.context import _get_global_client  # the proxy's actual options

    client = _get_global_client()
    assert client is not None  # serve.start made one
    options = client.http_config
    if not is_loopback(options.host or ""):
        raise ConfigError(
            f"Serve's HTTP proxy on this Ray cluster listens on {options.host}:{options.port}, "
            "not on loopback, and it checks no secret of its own; mlbridge will not publish "
            "its models there (restart Serve with host 127.0.0.1)"
        )
    host = f"[{options.host}]" if ":" in options.host else options.host
    return f"http://{host}:{options.port}"


def free_port(host: str) -> int:
    """A TCP port free on ``host`` now (Serve takes a number, not a socket)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _refuse_running_app(serve: ModuleType, settings: Settings) -> None:
    if APP_NAME in serve.status().applications:
        raise ConfigError(
            f"the Ray cluster at {settings.ray_address or 'this machine'} already runs a Serve "
            f"application named {APP_NAME!r}; stop it first ('mlbridge stop' with its "
            f"MLBRIDGE_HOME, or serve.delete({APP_NAME!r}))"
        )


def _deploy(serve: ModuleType, plan: ReplicaPlan, stop: Any) -> list[str]:
    """Deploy the app and wait until every replica answers; the names of the models served."""
    settings = plan.settings
    options: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        "ray_actor_options": {"num_cpus": settings.replica_cpus},
        "max_ongoing_requests": settings.replica_max_ongoing,
        "graceful_shutdown_timeout_s": settings.shutdown_timeout_s,
    }
    if settings.max_replicas > settings.replicas:
        options["autoscaling_config"] = {
            "min_replicas": settings.replicas,
            "initial_replicas": settings.replicas,
            "max_replicas": settings.max_replicas,
        }
    else:
        options["num_replicas"] = settings.replicas
    deployment = serve.deployment(_ingress_class(serve), **options)
    try:
        serve.run(deployment.bind(plan, stop), name=APP_NAME, route_prefix=ROUTE_PREFIX)
        names: list[str] = serve.get_app_handle(APP_NAME).model_names.remote().result()
    except Exception as error:  # the replica's traceback is in the deployment's status
        cause = failure_cause(f"{error}\n{_deployment_message(serve)}")
        _delete_app(serve)
        raise ConfigError(f"the deployment on Ray Serve failed: {cause}") from None
    log.info(
        "deployed %s on Ray Serve: %d replica(s)%s", APP_NAME, settings.replicas,
        f", up to {settings.max_replicas}" if "autoscaling_config" in options else "",
    )  # fmt: skip
    return names


def failure_cause(report: str) -> str:
    """The last ``SomeError: message`` line of a failure report (Serve's are tracebacks)."""
    causes = RAISED.findall(report)
    return causes[-1].strip() if causes else report.strip().splitlines()[0]


def _deployment_message(serve: ModuleType) -> str:
    try:
        app = serve.status().applications[APP_NAME]
        return "\n".join(d.message for d in app.deployments.values())
    except Exception:  # no status to add; the error alone must do
        return ""


def _delete_app(serve: ModuleType) -> None:
    try:
        serve.delete(APP_NAME)
    except Exception as error:  # the cluster may be going away already
        log.warning("could not delete the Serve application %r: %s", APP_NAME, error)


def _ingress_class(serve: ModuleType) -> type:
    """The deployment class: builds the app in each replica (defined once ray is imported)."""

    @serve.ingress()
    class MLBridgeReplica:
        """One replica: the mlbridge app over its own registry."""

        def __init__(self, plan: ReplicaPlan, stop: Any) -> None:
            self.plan = plan
            self.stop = stop
            self.mlbridge_app: Starlette | None = None

        def __serve_build_asgi_app__(self) -> Starlette:
            self.mlbridge_app = build_app(self.plan, self.request_stop)
            return self.mlbridge_app

        def request_stop(self) -> None:
            """``POST /v2/shutdown`` in any replica: tell the driver to tear everything down."""
            self.stop.request.remote()

        def model_names(self) -> list[str]:
            assert self.mlbridge_app is not None
            return self.mlbridge_app.state.service.registry.names()

    return MLBridgeReplica


def _stop_signal_class(ray: ModuleType) -> Any:
    """A tiny actor through which a replica asks the driver to stop."""

    @ray.remote(num_cpus=0)
    class StopSignal:
        def __init__(self) -> None:
            self.requested = threading.Event()

        def request(self) -> None:
            self.requested.set()

        def wait(self, timeout_s: float) -> bool:
            return self.requested.wait(timeout_s)

    return StopSignal


def wait_for_stop(ray: ModuleType, stop: Any) -> None:
    """Block until SIGTERM/SIGINT here or a stop request from a replica."""
    signalled = threading.Event()

    def on_signal(number: int, frame: object) -> None:
        log.info("stopping (%s)", signal.Signals(number).name)
        signalled.set()

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, on_signal)  # ray.init replaced SIGTERM's handler
    while not signalled.is_set():
        if ray.get(stop.wait.remote(POLL_S)):
            log.info("stopping (POST /v2/shutdown)")
            return
