"""The app's request path: the guard and the metrics on every request, Starlette's router
only where a route needs it.

:class:`ServedApp` is the Starlette app with one entry for every HTTP request, in this
order: time it, open its :class:`~mlbridge.server.guard.Exchange` (Host, Origin, upgrades,
the body budget) and answer a refusal, else run the route; then give its body bytes back
and record it (:class:`~mlbridge.server.metrics.RequestObserver`: metrics, the access
log). The route runs one of two ways. :class:`HotRoutes` hands a request to a *lean*
route directly: the route Starlette's router would choose (the first of the table whose
path and method match), with the same ``path_params``, ``route`` and ``endpoint`` in the
scope, but without trying every route before it and without Starlette's middleware. Every
other request goes through Starlette's own stack (``ServerErrorMiddleware`` ->
``ExceptionMiddleware`` -> the router). A route is lean when it answers every request and
every error itself from ASGI's scope, receive and send: a route whose family says so
(``lean = True``: :class:`~mlbridge.server.cas.CasRoute`) or whose endpoint is an
:class:`AsgiEndpoint`. Its access rule and error format are its guard's, declared in the
route table; nothing here checks credentials.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from ..eager import own_task
from .guard import TransportGuard, refuse_websocket
from .metrics import RequestObserver

AsgiHandler = Callable[[Scope, Receive, Send], Awaitable[None]]
NO_CONTENT_LENGTH = frozenset({204, 304})  # statuses whose replies have no body
REMEMBERED_PATHS = 1024  # (method, path) pairs whose route is kept; then forgotten at once


class AsgiEndpoint:
    """An endpoint that takes ASGI's scope, receive and send itself: its route is lean.

    Made by :func:`asgi_endpoint`; Starlette runs any endpoint that is not a function as ASGI.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


def asgi_endpoint(handler: AsgiHandler) -> AsgiEndpoint:
    """``handler`` as an :class:`AsgiEndpoint`: called as it is, no frame between (a class of
    its own whose ``__call__`` it is)."""
    members = {"__call__": staticmethod(handler), "__doc__": handler.__doc__}
    members["__module__"] = handler.__module__
    endpoint: AsgiEndpoint = type(handler.__name__, (AsgiEndpoint,), members)()
    return endpoint


def is_lean(route: BaseRoute) -> bool:
    """Whether ``route`` answers from scope, receive and send alone (module docstring)."""
    if not isinstance(route, Route):
        return False
    return bool(getattr(route, "lean", False)) or isinstance(route.endpoint, AsgiEndpoint)


class ServedApp(Starlette):
    """Starlette behind the guard and the observer, with :class:`HotRoutes` in front of its
    router (see the module docstring)."""

    def __init__(
        self,
        routes: Sequence[BaseRoute],
        guard: TransportGuard,
        observer: RequestObserver,
        exception_handlers: Mapping[Any, Any],
    ) -> None:
        super().__init__(routes=routes, exception_handlers=exception_handlers)
        self.state = AppState()
        self.guard = guard
        self.observer = observer
        self.hot = HotRoutes(self.routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        if self.middleware_stack is None:
            self.middleware_stack = self.build_middleware_stack()
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await refuse_websocket(send)
            else:
                await own_task()
                await self.middleware_stack(scope, receive, send)  # lifespan
            return
        started = time.perf_counter()
        exchange = self.guard.exchange(scope, receive, send)
        try:
            refusal = exchange.refusal()
            if refusal is not None:
                await exchange.refuse(refusal)
                return
            route = self.hot.route(scope)
            if route is None:
                await own_task()  # Starlette's stack may use anyio, which needs one
                app = self.middleware_stack
            else:
                app = route.app
            await app(scope, exchange.receive, exchange.send)
        finally:
            exchange.release()
            self.observer.record(scope, exchange.status, time.perf_counter() - started)


Candidate = tuple["re.Pattern[str] | None", "Route | None"]


class AppState(State):
    """Starlette's ``State``, its values also kept as plain attributes: the hot routes read
    several a request, each otherwise a call of ``State.__getattr__``."""

    def __setattr__(self, key: Any, value: Any) -> None:
        super().__setattr__(key, value)
        object.__setattr__(self, key, value)

    def __delattr__(self, key: Any) -> None:
        super().__delattr__(key)
        object.__delattr__(self, key)

    __setitem__ = __setattr__
    __delitem__ = __delattr__


class HotRoutes:
    """Which lean route takes a request, straight from the route table."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self.candidates = candidates(routes)
        self.known: dict[tuple[str, str], tuple[Route, dict[str, Any]] | None] = {}

    def route(self, scope: Scope) -> Route | None:
        """The lean route the router would choose for this request (written into its scope
        as the router would), or None: not a lean route's, or only the router can tell."""
        if scope.get("root_path"):
            return None
        key = (scope["method"], scope["path"])
        try:
            found = self.known[key]
        except KeyError:
            found = self.remember(key)
        if found is None:
            return None
        route, params = found
        scope["path_params"] = {**scope.get("path_params", {}), **params}
        scope["endpoint"] = route.endpoint
        scope["route"] = route
        return route

    def remember(self, key: tuple[str, str]) -> tuple[Route, dict[str, Any]] | None:
        if len(self.known) >= REMEMBERED_PATHS:
            self.known.clear()  # bounded, whatever paths are sent
        found = self.known[key] = self.find(*key)
        return found

    def find(self, method: str, path: str) -> tuple[Route, dict[str, Any]] | None:
        """The route and path parameters of a lean route's request, or None."""
        for pattern, route in self.candidates.get(method, ()):
            if pattern is None:
                return None  # a route only the router can match
            match = pattern.match(path)
            if match is not None:
                if route is None:
                    return None  # the router's choice, not lean
                convertors = route.param_convertors
                found = match.groupdict().items()
                return route, {name: convertors[name].convert(text) for name, text in found}
        return None


def candidates(routes: Sequence[BaseRoute]) -> dict[str, tuple[Candidate, ...]]:
    """For each method a lean route takes: every route that may take it, in table order,
    as (path pattern, the route if lean); a route only the router can match has no pattern."""
    methods = {m for r in routes if is_lean(r) for m in getattr(r, "methods", None) or ()}
    table: dict[str, tuple[Candidate, ...]] = {}
    for method in methods:
        entries: list[Candidate] = []
        for route in routes:
            if not isinstance(route, Route):
                entries.append((None, None))
            elif route.methods is None or method in route.methods:
                entries.append((route.path_regex, route if is_lean(route) else None))
        table[method] = tuple(entries)
    return table


async def send_reply(
    send: Send,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    media_type: str | None = None,
    status: int = 200,
) -> None:
    """Send a whole reply, with the headers Starlette's ``Response`` would write for it."""
    raw = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in (headers or {}).items()
    ]
    names = {name for name, _ in raw}
    if b"content-length" not in names and status >= 200 and status not in NO_CONTENT_LENGTH:
        raw.append((b"content-length", str(len(body)).encode()))
    if media_type is not None and b"content-type" not in names:
        raw.append((b"content-type", content_type(media_type)))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


@lru_cache(maxsize=32)
def content_type(media_type: str) -> bytes:
    """The Content-Type of ``media_type`` as Starlette writes it (text in UTF-8)."""
    if media_type.startswith("text/") and "charset=" not in media_type.lower():
        media_type += "; charset=utf-8"
    return media_type.encode("latin-1")
