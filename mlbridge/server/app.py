"""The app factory: every route in one table, each with its access rule and error format."""

from __future__ import annotations

from starlette.applications import Starlette
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
from .policy import Access, DeclaredRoute, JsonRoute

OPEN, SECRET, SECRET_OR_FIRST_LINE = Access.OPEN, Access.SECRET, Access.SECRET_OR_FIRST_LINE
MODEL = "/v2/models/{name}"
VERSIONED = "/v2/models/{name}/versions/{version}"

ROUTES: list[DeclaredRoute] = [
    JsonRoute("/v2/health/live", routes.live, access=OPEN),
    JsonRoute("/v2/health/ready", routes.ready, access=OPEN),
    JsonRoute("/v2", routes.server_metadata, access=SECRET),
    JsonRoute("/v2/models", routes.model_list, access=SECRET),
    JsonRoute(MODEL, routes.model_metadata, access=SECRET),
    JsonRoute(MODEL + "/ready", routes.model_ready, access=SECRET),
    JsonRoute(MODEL + "/infer", routes.infer, access=SECRET, methods=["POST"]),
    JsonRoute(MODEL + "/stats", routes.model_statistics, access=SECRET),
    JsonRoute(VERSIONED, routes.model_metadata, access=SECRET),
    JsonRoute(VERSIONED + "/ready", routes.model_ready, access=SECRET),
    JsonRoute(VERSIONED + "/infer", routes.infer, access=SECRET, methods=["POST"]),
    CasRoute("/{name}", cas.predict, access=SECRET_OR_FIRST_LINE),
    CasRoute("/{name}/gradient", cas.gradient, access=SECRET_OR_FIRST_LINE),
    CasRoute("/{name}/jacobian", cas.jacobian, access=SECRET_OR_FIRST_LINE),
]


def create_app(
    registry: ModelRegistry, authenticator: TokenAuthenticator, settings: Settings
) -> Starlette:
    """Build the ASGI app serving ``registry``; routes check ``authenticator`` as declared."""
    app = Starlette(
        routes=ROUTES,
        exception_handlers={HTTPException: handle_http_error, Exception: handle_unexpected},
    )
    batching = BatchPolicy(settings.max_batch_size, settings.batch_delay_us)
    app.state.service = InferenceService(registry, settings.workers, batching)
    app.state.authenticator = authenticator
    app.state.cas_codecs = cas_codecs(max_decompressed=settings.max_body_bytes)
    app.state.settings = settings
    return app
