"""The CAS endpoint family: ``POST /{name}``, ``/{name}/gradient``, ``/{name}/jacobian``.

Bodies are Mathematica text, WXF or JSON (see :mod:`mlbridge.codecs`); the
reply is written in the request's format, or the one ``Accept`` names, and
so are errors (``Failure[...]`` for text and WXF). The codec is negotiated
once per request and passed to the endpoint and the error reply.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import lru_cache
from typing import TypeVar

import numpy as np
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from ..auth import bearer_token, is_signed
from ..codecs import CasCodec, codec_for_body, codec_for_reply
from ..errors import MLBridgeError, PayloadError, PayloadTooLarge, Unauthorized
from ..inference import InferenceService
from ..protocol import ModelSignature
from .errors import cas_error, client_gone, internal_error
from .fastpath import send_reply
from .guard import BodyBudget
from .policy import Access, DeclaredRoute, authenticator, authorized, header

log = logging.getLogger("mlbridge")
FIRST_LINE_MAX = 1024  # bytes of a body looked at for the secret before it is checked
REMOTE_FIRST_LINE = (
    "this server listens beyond this machine: the secret on the body's first line is not "
    "accepted here; send 'Authorization: Bearer <secret>' over https, or sign the request"
)
CasEndpoint = Callable[[Scope, CasCodec, bytes], Awaitable[np.ndarray]]
GRADIENT_ARGUMENTS = ("x", "cotangent")
T = TypeVar("T")


class CasRoute(DeclaredRoute):
    """A CAS route: the endpoint gets the request's scope, its codec and its (authenticated)
    body.

    Lean (see mlbridge.server.fastpath): it answers every request and error itself, from
    ASGI's scope, receive and send (Starlette's ``Request`` only for a secret on the body's
    first line).
    """

    allowed_access = frozenset({Access.SECRET, Access.SECRET_OR_FIRST_LINE})
    lean = True

    def __init__(self, path: str, endpoint: CasEndpoint, *, access: Access) -> None:
        self.cas_endpoint = endpoint
        super().__init__(path, endpoint, access=access, methods=["POST"])

    def guarded(self, app: ASGIApp) -> ASGIApp:
        """The route's app is :meth:`answer`, which calls the endpoint itself."""
        return self.answer

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the secret, read the body, run the endpoint; errors in the caller's format."""
        state = scope["app"].state
        codecs = state.cas_codecs
        content_type = header(scope, b"content-type") or ""
        accept = header(scope, b"accept") or ""
        reply: CasCodec | None = None  # the reply's format, once the body is read
        try:
            body = await self.authenticated_body(scope, receive)
            codec = codec_for_body(content_type, body, codecs)
            reply = codec_for_reply(accept, codec, codecs)
            result = await self.cas_endpoint(scope, codec, body)
            content = await state.service.executor.convert(result.size, reply.encode_tensor, result)
        except MLBridgeError as error:
            response = cas_error(error, reply or unread_reply(content_type, accept, codecs))
        except ClientDisconnect:  # nobody is left to answer
            response = client_gone()
        except Exception:  # anything else is our bug: say so, in the caller's format
            log.exception("unexpected error on POST %s", scope["path"])
            error_reply = reply or unread_reply(content_type, accept, codecs)
            response = cas_error(internal_error(), error_reply)
        else:
            await send_reply(send, content, media_type=reply.media_type)
            return
        await response(scope, receive, send)

    async def authenticated_body(self, scope: Scope, receive: Receive) -> bytes:
        """The body after the secret was proved (a header first; else the body's first line).

        A header (Bearer or signed) is checked by :func:`~.policy.authorized`, which also
        checks a signed body as it arrives. The first-line form is refused by a server open
        to the network. Without a header, only the first line (at most
        :data:`FIRST_LINE_MAX` bytes of the first chunks received) is looked at before the
        secret is checked.
        """
        authorization = header(scope, b"authorization")
        headed = is_signed(authorization) or bearer_token(authorization) is not None
        if headed or self.access is Access.SECRET:
            return await read_body(scope, authorized(scope, receive))
        if scope["app"].state.remote:  # the server listens beyond this machine
            raise Unauthorized(REMOTE_FIRST_LINE)
        body_limit(scope, declared_size(scope))
        stream = Request(scope, receive).stream()
        secret, start = split_secret_line(await first_line(stream))
        try:
            authenticator(scope).check(secret)
        except MLBridgeError:
            await stream.aclose()
            raise
        return await read_body(scope, receive, stream, start)


def unread_reply(content_type: str, accept: str, codecs: dict[str, CasCodec]) -> CasCodec:
    """The format of an error met before the body was read: what the headers say."""
    return codec_for_reply(accept, codec_for_body(content_type, b"", codecs), codecs)


async def read_body(
    scope: Scope,
    receive: Receive,
    stream: AsyncIterator[bytes] | None = None,
    start: bytes = b"",
) -> bytes:
    """The whole body (``start``, then the rest of ``stream``, else what ``receive`` gives),
    refused early: before reading when its declared size passes the limit or the body
    budget, else once it passes the limit."""
    declared = declared_size(scope)
    limit = body_limit(scope, declared)
    budget: BodyBudget = scope["app"].state.body_budget
    if declared is not None and not budget.fits(declared - len(start)):
        raise budget.busy()
    if stream is None:
        return await received_body(receive, limit)
    chunks, size = [start], len(start)
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def received_body(receive: Receive, limit: int) -> bytes:
    """The body's messages joined, read as ``Request.stream`` reads them (ClientDisconnect
    when the client left); PayloadTooLarge once it passes ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"body exceeds the limit of {limit} bytes")


def body_limit(scope: Scope, declared: int | None) -> int:
    """The body limit; PayloadTooLarge, before reading, when the ``declared`` size passes it."""
    limit: int = scope["app"].state.settings.max_body_bytes
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds the limit of {limit} bytes")
    return limit


def declared_size(scope: Scope) -> int | None:
    """The ``Content-Length`` of the request, or None (chunked, or absent)."""
    declared = header(scope, b"content-length")
    return int(declared) if declared and declared.isdigit() else None


async def first_line(stream: AsyncIterator[bytes]) -> bytes:
    """The body's first chunks, read until they hold a newline or :data:`FIRST_LINE_MAX`
    bytes, start with data, or end."""
    head = b""
    async for chunk in stream:
        head += chunk
        start = head[:FIRST_LINE_MAX]
        if b"\n" in start or len(start) == FIRST_LINE_MAX or starts_with_data(start):
            break
    return head


def starts_with_data(body: bytes) -> bool:
    """Whether a body begins with a payload, not a secret (no secret was sent)."""
    first = body.lstrip()[:1]
    return first in (b"{", b"[", b"<") or body.startswith((b"8:", b"8C:"))


def split_secret_line(body: bytes) -> tuple[str | None, bytes]:
    """The original design's body: the secret, a newline, then the payload."""
    first, _, rest = body.partition(b"\n")
    if starts_with_data(first) or not first.strip() or len(first) >= FIRST_LINE_MAX:
        return None, body  # the first line is data, or too long to be a secret: none was sent
    return first.decode("utf-8", "replace").strip(), rest


def service(scope: Scope) -> InferenceService:
    return scope["app"].state.service


async def decode(scope: Scope, codec: CasCodec, function: Callable[[bytes], T], body: bytes) -> T:
    """Parse ``body`` with ``function`` of ``codec``: inline when cheap, in a worker thread
    when big or compressed (as the codec says)."""
    return await service(scope).executor.convert(codec.decode_cost(body), function, body)


async def predict(scope: Scope, codec: CasCodec, body: bytes) -> np.ndarray:
    """POST /{name}: the model's first output for one example or a batch."""
    reader = bounded(scope, codec)
    array = await decode(scope, reader, reader.decode_tensor, body)
    return await service(scope).infer_tensor(scope["path_params"]["name"], array)


async def gradient(scope: Scope, codec: CasCodec, body: bytes) -> np.ndarray:
    """POST /{name}/gradient: dx = J(x)ᵀ·dy, for x alone or <|"x" -> .., "cotangent" -> ..|>."""
    reader = bounded(scope, codec, cotangents=True)
    x, cotangent = gradient_arguments(await decode(scope, reader, reader.decode_arguments, body))
    return await service(scope).gradient(scope["path_params"]["name"], x, cotangent)


async def jacobian(scope: Scope, codec: CasCodec, body: bytes) -> np.ndarray:
    """POST /{name}/jacobian: the full Jacobian at one example."""
    reader = bounded(scope, codec)
    array = await decode(scope, reader, reader.decode_tensor, body)
    return await service(scope).jacobian(scope["path_params"]["name"], array)


def bounded(scope: Scope, codec: CasCodec, cotangents: bool = False) -> CasCodec:
    """``codec`` refusing, before it allocates, more numbers than the model's inputs (or, for
    a gradient, its outputs as cotangents) can hold; an unknown model is a 404 before any
    decoding."""
    signature = service(scope).model(scope["path_params"]["name"]).signature
    return bounded_codec(codec, signature, cotangents)


@lru_cache(maxsize=256)
def bounded_codec(codec: CasCodec, signature: ModelSignature, cotangents: bool) -> CasCodec:
    """:func:`bounded`, worked out once per codec and signature (~5 us a request otherwise)."""
    return codec.bounded(signature.max_values(codec.max_values, cotangents))


def gradient_arguments(arguments: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """``x`` and the optional ``cotangent``; any other name is a PayloadError."""
    unknown = sorted(set(arguments) - set(GRADIENT_ARGUMENTS))
    if unknown or "x" not in arguments:
        raise PayloadError(
            f"the gradient route takes x, or an association with keys 'x' and optionally "
            f"'cotangent'; got keys {sorted(arguments)}"
        )
    return arguments["x"], arguments.get("cotangent")
