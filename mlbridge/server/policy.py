"""Each route declares who may call it and how its errors are written, where it is declared.

Access rules (an argument of every route in :data:`mlbridge.server.app.ROUTES`;
there is no default, so no route is open by accident):

- ``OPEN``: anyone; the health checks only.
- ``SECRET``: ``Authorization: Bearer <secret>``.
- ``SECRET_OR_FIRST_LINE``: that header, or the secret on the body's first line
  (the original design's body); checked before the payload is parsed.

Route families fix the error format: :class:`JsonRoute` answers
``{"error": ..., "code": ...}`` (V2 and operational routes);
:class:`~mlbridge.server.cas.CasRoute` answers in the CAS format it negotiated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import Enum
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..auth import TokenAuthenticator, bearer_token
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
                    authenticator(scope).check(bearer_token(header(scope, b"authorization")))
                await app(scope, receive, send)
            except MLBridgeError as error:
                await json_error(error)(scope, receive, send)
            except ClientDisconnect:  # nobody is left to answer
                await client_gone()(scope, receive, send)
            except Exception:  # anything else is our bug: say so, in this route's format
                log.exception("unexpected error on %s %s", scope["method"], scope["path"])
                await json_error(internal_error())(scope, receive, send)

        return guard


def authenticator(scope: Scope) -> TokenAuthenticator:
    """The app's authenticator (one per server, set by create_app)."""
    return scope["app"].state.authenticator


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header (``name`` in lower case), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None
