"""Each route declares who may call it and how its errors are written, where it is declared.

Access rules (an argument of every route in :data:`mlbridge.server.app.ROUTES`;
there is no default, so no route is open by accident):

- ``OPEN``: anyone; the health checks only.
- ``SECRET``: ``Authorization: Bearer <secret>``, or a signed request
  (``Authorization: MLBridge-HMAC-SHA256 ...``, see :mod:`mlbridge.auth`).
- ``SECRET_OR_FIRST_LINE``: either header, or the secret on the body's first line
  (the original design's body; refused by a server open to the network); checked
  before the payload is parsed.

Route families fix the error format: :class:`JsonRoute` answers
``{"error": ..., "code": ...}`` (V2 and operational routes);
:class:`~mlbridge.server.cas.CasRoute` answers in the CAS format it negotiated.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from enum import Enum
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..auth import SignedClaim, TokenAuthenticator, bearer_token, is_signed
from ..errors import MLBridgeError
from .errors import client_gone, internal_error, json_error

log = logging.getLogger("mlbridge")


class Access(Enum):
    """Who may call a route."""

    OPEN = "open"
    SECRET = "Bearer secret"
    SECRET_OR_FIRST_LINE = "Bearer secret, or the secret on the body's first line"


class DeclaredRoute(Route):
    """A route with a declared access rule; subclasses fix the error format."""

    allowed_access: frozenset[Access] = frozenset(Access)

    def __init__(
        self, path: str, endpoint: Callable[..., Any], *, access: Access, methods: list[str]
    ) -> None:
        if access not in self.allowed_access:
            raise ValueError(f"{type(self).__name__} {path} cannot have access {access.name}")
        super().__init__(path, endpoint, methods=methods)
        self.access = access
        self.app = self.guarded(self.app)

    def guarded(self, app: ASGIApp) -> ASGIApp:
        """Wrap the endpoint's ASGI app with this route's access check and error format."""
        raise NotImplementedError


class JsonRoute(DeclaredRoute):
    """A V2 or operational route: errors as ``{"error": ..., "code": ...}``."""

    allowed_access = frozenset({Access.OPEN, Access.SECRET})

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        access: Access,
        methods: list[str] | None = None,
    ) -> None:
        super().__init__(path, endpoint, access=access, methods=methods or ["GET"])

    def guarded(self, app: ASGIApp) -> ASGIApp:
        async def guard(scope: Scope, receive: Receive, send: Send) -> None:
            try:
                if self.access is not Access.OPEN:
                    receive = authorized(scope, receive)
                await app(scope, receive, send)
            except MLBridgeError as error:
                await json_error(error)(scope, receive, send)
            except ClientDisconnect:  # nobody is left to answer
                await client_gone()(scope, receive, send)
            except Exception:  # anything else is our bug: say so, in this route's format
                log.exception("unexpected error on %s %s", scope["method"], scope["path"])
                await json_error(internal_error())(scope, receive, send)

        return guard


def authorized(scope: Scope, receive: Receive) -> Receive:
    """Check the request's credentials; the ``receive`` to read its body through.

    A Bearer secret is checked at once. A signed request's header is checked at once and
    its body as it arrives: the last chunk of a body other than the one signed raises
    Unauthorized, before the route can use it.
    """
    authorization = header(scope, b"authorization")
    if not is_signed(authorization):
        authenticator(scope).check(bearer_token(authorization))
        return receive
    claim = check_signature(scope, authorization or "")
    digest = hashlib.sha256()

    async def signed_body() -> Message:
        message = await receive()
        digest.update(message.get("body", b""))
        if not message.get("more_body", False):
            TokenAuthenticator.check_body(claim, digest.hexdigest())
        return message

    return signed_body


def check_signature(scope: Scope, authorization: str) -> SignedClaim:
    """Check a signed request's header against its method and target (path and query)."""
    target = scope.get("raw_path") or scope["path"].encode()
    if scope.get("query_string"):
        target += b"?" + scope["query_string"]
    return authenticator(scope).check_signed(
        authorization, scope["method"], target.decode("latin-1")
    )


def authenticator(scope: Scope) -> TokenAuthenticator:
    """The app's authenticator (one per server, set by create_app)."""
    return scope["app"].state.authenticator


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header (``name`` in lower case), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None
