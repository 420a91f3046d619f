"""Error replies, one per format: V2/operational JSON and the CAS codecs.

Routes choose theirs (see :mod:`mlbridge.server.policy`); these two
handlers serve what no route owns: Starlette's own 404/405 for paths and
methods no route matches, and errors that escape everything else.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..codecs import CasCodec
from ..errors import (
    InferenceFailed,
    MethodNotAllowed,
    MLBridgeError,
    RouteNotFound,
    ServerBusy,
    Unauthorized,
)

log = logging.getLogger("mlbridge")
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a request the client abandoned
CHALLENGE = {"www-authenticate": 'Bearer realm="mlbridge"'}


def json_error(error: MLBridgeError) -> Response:
    """``{"error": message, "code": code}`` with the error's status."""
    _log(error)
    return JSONResponse({"error": error.message, "code": error.code}, error.status, _headers(error))


def cas_error(error: MLBridgeError, codec: CasCodec) -> Response:
    """The error as ``codec`` writes it (a ``Failure[...]`` for text and WXF)."""
    _log(error)
    return Response(
        codec.encode_error(error), error.status, _headers(error), media_type=codec.media_type
    )


def client_gone() -> Response:
    """The reply to a client that hung up mid-request: nobody reads it (logged as 499)."""
    log.debug("client disconnected before its request was read")
    return Response(status_code=CLIENT_CLOSED_REQUEST)


def internal_error() -> MLBridgeError:
    """What a caller is told about a bug (the traceback goes to the log)."""
    return InferenceFailed("internal error; see the server log")


def _headers(error: MLBridgeError) -> dict[str, str] | None:
    if isinstance(error, ServerBusy):
        return {"retry-after": str(error.retry_after_s)}
    return CHALLENGE if isinstance(error, Unauthorized) else None


def _log(error: MLBridgeError) -> None:
    if error.status >= 500:
        log.error("%s: %s", error.code, error.message)


async def handle_http_error(request: Request, error: Exception) -> Response:
    """Starlette's own 404/405 for unknown paths and methods, as JSON."""
    assert isinstance(error, HTTPException)
    if error.status_code == 404:
        wrapped: MLBridgeError = RouteNotFound(f"no route {request.url.path}; see GET /v2")
    else:
        wrapped = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
    return json_error(wrapped)


async def handle_unexpected(request: Request, error: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return json_error(internal_error())
