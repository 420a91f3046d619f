"""The CAS endpoint family: ``POST /{name}``, ``/{name}/gradient``, ``/{name}/jacobian``.

Bodies are Mathematica text, WXF or JSON (see :mod:`mlbridge.codecs`); the
reply is written in the request's format, or the one ``Accept`` names, and
so are errors (``Failure[...]`` for text and WXF). The codec is negotiated
once per request and passed to the endpoint and the error reply.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import numpy as np
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..auth import bearer_token
from ..codecs import CasCodec, codec_for_body, codec_for_reply
from ..errors import MLBridgeError, PayloadError, PayloadTooLarge
from ..inference import Executor, InferenceService
from .errors import cas_error, client_gone, internal_error
from .policy import Access, DeclaredRoute, authenticator, header

log = logging.getLogger("mlbridge")
CasEndpoint = Callable[[Request, CasCodec, bytes], Awaitable[np.ndarray]]
GRADIENT_ARGUMENTS = ("x", "cotangent")
T = TypeVar("T")


class CasRoute(DeclaredRoute):
    """A CAS route: the endpoint gets the request, its codec and its (authenticated) body."""

    allowed_access = frozenset({Access.SECRET, Access.SECRET_OR_FIRST_LINE})

    def __init__(self, path: str, endpoint: CasEndpoint, *, access: Access) -> None:
        self.cas_endpoint = endpoint
        super().__init__(path, endpoint, access=access, methods=["POST"])

    def guarded(self, app: ASGIApp) -> ASGIApp:
        async def guard(scope: Scope, receive: Receive, send: Send) -> None:
            await (await self.answer(Request(scope, receive)))(scope, receive, send)

        return guard

    async def answer(self, request: Request) -> Response:
        """Check the secret, read the body, run the endpoint; errors in the caller's format."""
        codecs = request.app.state.cas_codecs
        content_type = request.headers.get("content-type", "")
        accept = request.headers.get("accept", "")
        reply = codec_for_reply(accept, codec_for_body(content_type, b"", codecs), codecs)
        try:
            body = await self.authenticated_body(request)
            codec = codec_for_body(content_type, body, codecs)
            reply = codec_for_reply(accept, codec, codecs)
            result = await self.cas_endpoint(request, codec, body)
            content = await executor(request).convert(result.size, reply.encode_tensor, result)
            return Response(content, media_type=reply.media_type)
        except MLBridgeError as error:
            return cas_error(error, reply)
        except ClientDisconnect:  # nobody is left to answer
            return client_gone()
        except Exception:  # anything else is our bug: say so, in the caller's format
            log.exception("unexpected error on POST %s", request.url.path)
            return cas_error(internal_error(), reply)

    async def authenticated_body(self, request: Request) -> bytes:
        """The body after the secret was proved (header first; else the body's first line)."""
        token = bearer(request)
        if token is not None or self.access is Access.SECRET:
            authenticator(request.scope).check(token)
            return await read_body(request)
        secret, body = split_secret_line(await read_body(request))
        authenticator(request.scope).check(secret)
        return body


def bearer(request: Request) -> str | None:
    return bearer_token(header(request.scope, b"authorization"))


async def read_body(request: Request) -> bytes:
    """The whole body, refused early once it passes the configured limit."""
    limit = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def split_secret_line(body: bytes) -> tuple[str | None, bytes]:
    """The original design's body: the secret, a newline, then the payload."""
    first, _, rest = body.partition(b"\n")
    if first.lstrip()[:1] in (b"{", b"[", b"<", b"") or first.startswith((b"8:", b"8C:")):
        return None, body  # the first line is already data: no secret was sent
    return first.decode("utf-8", "replace").strip(), rest


def service(request: Request) -> InferenceService:
    return request.app.state.service


def executor(request: Request) -> Executor:
    return service(request).executor


async def decode(request: Request, function: Callable[[bytes], T], body: bytes) -> T:
    """Parse ``body``: inline when small, in a worker thread when big."""
    return await executor(request).convert(Executor.values_in_body(len(body)), function, body)


async def predict(request: Request, codec: CasCodec, body: bytes) -> np.ndarray:
    """POST /{name}: the model's first output for one example or a batch."""
    array = await decode(request, codec.decode_tensor, body)
    return await service(request).infer_tensor(request.path_params["name"], array)


async def gradient(request: Request, codec: CasCodec, body: bytes) -> np.ndarray:
    """POST /{name}/gradient: dx = J(x)ᵀ·dy, for x alone or <|"x" -> .., "cotangent" -> ..|>."""
    arguments = await decode(request, codec.decode_arguments, body)
    x, cotangent = gradient_arguments(arguments)
    return await service(request).gradient(request.path_params["name"], x, cotangent)


async def jacobian(request: Request, codec: CasCodec, body: bytes) -> np.ndarray:
    """POST /{name}/jacobian: the full Jacobian at one example."""
    array = await decode(request, codec.decode_tensor, body)
    return await service(request).jacobian(request.path_params["name"], array)


def gradient_arguments(arguments: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """``x`` and the optional ``cotangent``; any other name is a PayloadError."""
    unknown = sorted(set(arguments) - set(GRADIENT_ARGUMENTS))
    if unknown or "x" not in arguments:
        raise PayloadError(
            f"the gradient route takes x, or an association with keys 'x' and optionally "
            f"'cotangent'; got keys {sorted(arguments)}"
        )
    return arguments["x"], arguments.get("cotangent")
