"""The app factory: every route in one table, each with its access rule and error format.

Every request passes the transport guard and is recorded (metrics, the access log); the
hot routes (V2 infer, the CAS routes) are lean: the app hands them their requests without
Starlette's router (see :mod:`mlbridge.server.fastpath`).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from starlette.exceptions import HTTPException

from ..auth import TokenAuthenticator
from ..batching import BatchPolicy
from ..codecs import cas_codecs
from ..inference import InferenceService
from ..registry import ModelRegistry
from ..settings import Settings
from . import cas, routes
from .cas import CasRoute
from .errors import handle_http_error, handle_unexpected
from .exposure import Exposure
from .fastpath import ServedApp
from .guard import LOOPBACK_NAMES, BodyBudget, TransportGuard
from .metrics import RequestObserver, ServerMetrics
from .policy import Access, DeclaredRoute, JsonRoute
from .reloading import Reloader

OPEN, SECRET, SECRET_OR_FIRST_LINE = Access.OPEN, Access.SECRET, Access.SECRET_OR_FIRST_LINE
MODEL = "/v2/models/{name}"
VERSIONED = "/v2/models/{name}/versions/{version}"
REPOSITORY = "/v2/repository/models/{name}"

ROUTES: list[DeclaredRoute] = [
    JsonRoute("/v2/health/live", routes.live, access=OPEN),
    JsonRoute("/v2/health/ready", routes.ready, access=OPEN),
    JsonRoute("/v2/health/proof", routes.proof, access=OPEN),
    JsonRoute("/v2", routes.server_metadata, access=SECRET),
    JsonRoute("/v2/models", routes.model_list, access=SECRET),
    JsonRoute(MODEL, routes.model_metadata, access=SECRET),
    JsonRoute(MODEL + "/ready", routes.model_ready, access=SECRET),
    JsonRoute(MODEL + "/infer", routes.infer, access=SECRET, methods=["POST"]),
    JsonRoute(MODEL + "/stats", routes.model_statistics, access=SECRET),
    JsonRoute("/v2/repository/index", routes.repository_index, access=SECRET, methods=["POST"]),
    JsonRoute(REPOSITORY + "/load", routes.load_model, access=SECRET, methods=["POST"]),
    JsonRoute("/metrics", routes.metrics, access=SECRET),
    JsonRoute("/v2/openapi.json", routes.openapi, access=SECRET),
    JsonRoute("/v2/shutdown", routes.shutdown, access=SECRET, methods=["POST"]),
    JsonRoute(VERSIONED, routes.model_metadata, access=SECRET),
    JsonRoute(VERSIONED + "/ready", routes.model_ready, access=SECRET),
    JsonRoute(VERSIONED + "/infer", routes.infer, access=SECRET, methods=["POST"]),
    CasRoute("/{name}", cas.predict, access=SECRET_OR_FIRST_LINE),
    CasRoute("/{name}/gradient", cas.gradient, access=SECRET_OR_FIRST_LINE),
    CasRoute("/{name}/jacobian", cas.jacobian, access=SECRET_OR_FIRST_LINE),
]


def create_app(
    registry: ModelRegistry,
    authenticator: TokenAuthenticator,
    settings: Settings,
    on_models_changed: Callable[[list[str]], None] | None = None,
    request_shutdown: Callable[[], None] | None = None,
    server_pid: int | None = None,
    exposure: Exposure | None = None,
) -> ServedApp:
    """Build the ASGI app serving ``registry``; routes check ``authenticator`` as declared.

    ``on_models_changed`` hears the served names after a reload changed them;
    ``request_shutdown`` starts a graceful stop (``POST /v2/shutdown``; absent: 404);
    ``server_pid`` is the pid the server reports (default this process; on Ray Serve
    the driver's, which ``server.json`` names); ``exposure`` says who may reach it
    (default: this machine only).
    """
    exposure = exposure or Exposure(settings.host, remote=False)
    names = LOOPBACK_NAMES | {name.encode() for name in exposure.names}
    metrics = ServerMetrics()
    budget = BodyBudget(settings.body_budget_bytes)
    app = ServedApp(
        routes=ROUTES,
        guard=TransportGuard(budget, names),
        observer=RequestObserver(metrics, registry.__contains__, settings.access_log),
        exception_handlers={HTTPException: handle_http_error, Exception: handle_unexpected},
    )
    app.router.redirect_slashes = False  # a redirect would echo the request's Host
    batching = BatchPolicy(settings.max_batch_size, settings.batch_delay_us)
    app.state.service = InferenceService(
        registry, settings.workers, batching, metrics.observe_batch, settings.max_queue
    )
    app.state.metrics = metrics
    app.state.reloader = Reloader(registry, on_models_changed)
    app.state.request_shutdown = request_shutdown
    app.state.server_pid = server_pid or os.getpid()
    app.state.authenticator = authenticator
    app.state.cas_codecs = cas_codecs(max_decompressed=settings.max_body_bytes)
    app.state.settings = settings
    app.state.body_budget = budget
    app.state.remote = exposure.remote
    return app
