"""One place that turns exceptions into replies in the caller's own format.

V2 routes answer ``{"error": "..."}``; the CAS endpoint answers in the
format of the request (a Wolfram Language ``Failure[...]`` for text and WXF),
or the one its ``Accept`` header asks for.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..codecs import CasCodec, codec_for_body, codec_for_reply
from ..errors import InferenceFailed, MethodNotAllowed, MLBridgeError, RouteNotFound

log = logging.getLogger("mlbridge")
V2_PREFIX = "/v2"


def is_cas_path(path: str) -> bool:
    """Whether ``path`` is the CAS endpoint ``/{model}`` rather than a V2 route."""
    return not (path == V2_PREFIX or path.startswith(V2_PREFIX + "/"))


def error_reply(
    path: str, headers: dict[str, str], error: MLBridgeError, codec: CasCodec | None = None
) -> Response:
    """The reply that carries ``error`` in the format the caller reads."""
    if not is_cas_path(path):
        return JSONResponse({"error": error.message, "code": error.code}, error.status)
    request_codec = codec or codec_for_body(headers.get("content-type", ""), b"")
    reply = codec_for_reply(headers.get("accept", ""), request_codec)
    return Response(reply.encode_error(error), error.status, media_type=reply.media_type)


async def handle_mlbridge_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, MLBridgeError)
    if error.status >= 500:
        log.error("%s %s: %s", request.method, request.url.path, error.message)
    codec = getattr(request.state, "codec", None)
    return error_reply(request.url.path, dict(request.headers), error, codec)


async def handle_http_error(request: Request, error: Exception) -> Response:
    """Starlette's own 404/405 for unknown routes, in our format."""
    assert isinstance(error, HTTPException)
    if error.status_code == 404:
        wrapped: MLBridgeError = RouteNotFound(f"no route {request.url.path}; see GET /v2")
    else:
        wrapped = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
    return error_reply(request.url.path, dict(request.headers), wrapped)


async def handle_unexpected(request: Request, error: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    wrapped = InferenceFailed(f"internal error ({type(error).__name__}); see the server log")
    return error_reply(request.url.path, dict(request.headers), wrapped)
