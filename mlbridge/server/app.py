"""The app factory: every route in one table, middleware order explicit."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route

from ..auth import TokenAuthenticator
from ..codecs import cas_codecs
from ..errors import MLBridgeError
from ..inference import InferenceService
from ..registry import ModelRegistry
from ..settings import Settings
from . import routes
from .errors import handle_http_error, handle_mlbridge_error, handle_unexpected
from .middleware import AuthMiddleware

MODEL = "/v2/models/{name}"
VERSIONED = "/v2/models/{name}/versions/{version}"

ROUTES = [
    Route("/v2/health/live", routes.live),
    Route("/v2/health/ready", routes.ready),
    Route("/v2", routes.server_metadata),
    Route("/v2/models", routes.model_list),
    Route(MODEL, routes.model_metadata),
    Route(MODEL + "/ready", routes.model_ready),
    Route(MODEL + "/infer", routes.infer, methods=["POST"]),
    Route(VERSIONED, routes.model_metadata),
    Route(VERSIONED + "/ready", routes.model_ready),
    Route(VERSIONED + "/infer", routes.infer, methods=["POST"]),
    Route("/{name}", routes.cas_predict, methods=["POST"]),
]


def create_app(
    registry: ModelRegistry, authenticator: TokenAuthenticator, settings: Settings
) -> Starlette:
    """Build the ASGI app serving ``registry``; every request passes ``authenticator``."""
    app = Starlette(
        routes=ROUTES,
        middleware=[Middleware(AuthMiddleware, authenticator=authenticator)],
        exception_handlers={
            MLBridgeError: handle_mlbridge_error,
            HTTPException: handle_http_error,
            Exception: handle_unexpected,
        },
    )
    app.state.service = InferenceService(registry, workers=settings.workers)
    app.state.authenticator = authenticator
    app.state.cas_codecs = cas_codecs(max_decompressed=settings.max_body_bytes)
    app.state.settings = settings
    return app
