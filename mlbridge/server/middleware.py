"""Authentication middleware (pure ASGI, so it adds no per-request overhead).

Contract: ``/v2/health/*`` is open. Every other request carries
``Authorization: Bearer <secret>``. A CAS request (``POST /{model}``) without
that header is passed on with ``scope["state"]["authenticated"] = False``:
its route must then find the secret on the body's first line (the original
design's form) and check it before anything else.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from ..auth import TokenAuthenticator, bearer_token
from ..errors import Unauthorized
from .errors import error_reply, is_cas_path

OPEN_PREFIX = "/v2/health/"


class AuthMiddleware:
    """Lets a request through only with the secret (or a CAS body that may carry it)."""

    def __init__(self, app: ASGIApp, authenticator: TokenAuthenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(OPEN_PREFIX):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        token = bearer_token(headers.get("authorization"))
        if token is not None and self.authenticator.matches(token):
            scope.setdefault("state", {})["authenticated"] = True
        elif token is None and is_cas_path(scope["path"]) and scope["method"] == "POST":
            scope.setdefault("state", {})["authenticated"] = False
        else:
            try:
                self.authenticator.check(token)
            except Unauthorized as error:
                reply = error_reply(scope["path"], headers, error)
                reply.headers["www-authenticate"] = 'Bearer realm="mlbridge"'
                await reply(scope, receive, send)
                return
        await self.app(scope, receive, send)
