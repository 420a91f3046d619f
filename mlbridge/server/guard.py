"""The guard every request passes before any route: only programs on this machine get in.

The app (:class:`~mlbridge.server.fastpath.ServedApp`) opens an :class:`Exchange` for every
HTTP request and refuses a WebSocket session outright, before any route; it is cheap
enough to run on every request (a few microseconds; see docs/security.md). It refuses, in
JSON:

- 421 a ``Host`` that does not name this machine: ``localhost``, ``127.0.0.1``, ``::1`` or
  the address the server is bound to, any port (an SSH tunnel keeps its own); in remote
  use, also this machine's names and ``server_names`` (see exposure.py). A web page
  that rebinds its DNS name to 127.0.0.1 still sends its own name, so it gets nothing;
- 403 anything a browser sends on a web page's behalf: an ``Origin`` header, or a
  ``Sec-Fetch-Site`` other than ``none`` (a user typing the URL);
- 400 a protocol upgrade (WebSocket, h2c) or ``CONNECT``; WebSocket sessions are closed.

It adds ``X-Content-Type-Options: nosniff`` to every reply, and ``Connection: close`` to a
reply sent while the client still waits for ``100 Continue`` (its body will not follow).
It meters request bodies against the server's :class:`BodyBudget` as they are received:
a chunk that would take the bodies held at once past the budget raises
:class:`~mlbridge.errors.ServerBusy` from ``receive``, which the route answers (503,
``Retry-After``) in its own format; a request's bytes are given back when it ends.
"""

from __future__ import annotations

from typing import NamedTuple

import orjson
from starlette.types import Message, Receive, Scope, Send

from ..errors import ServerBusy

MIB = 1024 * 1024
LOOPBACK_NAMES = frozenset({b"localhost", b"127.0.0.1", b"::1"})
WATCHED = frozenset({b"host", b"origin", b"sec-fetch-site", b"upgrade", b"expect"})
REMEMBERED_HOSTS = 64  # allowed Host values kept for a quick check (loopback names x ports)
NOSNIFF = (b"x-content-type-options", b"nosniff")
CLOSE = (b"connection", b"close")
SHOWN = 100  # characters of a refused Host shown back
HOSTS_HINT = "localhost, 127.0.0.1, [::1] or the address it is bound to"
UPGRADE_REFUSED = "protocol upgrades are not served (Upgrade: {}); send plain HTTP/1.1 requests"


class Refusal(NamedTuple):
    """A request the guard answers itself."""

    status: int
    code: str
    message: str


class BodyBudget:
    """Bytes of request bodies the server holds at once (one per app; one event loop)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def fits(self, size: int) -> bool:
        """Whether ``size`` more bytes would stay within the budget now."""
        return self.held + size <= self.limit

    def take(self, size: int) -> None:
        """Count ``size`` bytes as held; ServerBusy if they do not fit."""
        if not self.fits(size):
            raise self.busy()
        self.held += size

    def give_back(self, size: int) -> None:
        self.held -= size

    def busy(self) -> ServerBusy:
        return ServerBusy(
            f"the server holds {self.held / MIB:.0f} MiB of request bodies, near its limit "
            f"of {self.limit / MIB:.0f} MiB (body_budget_mb); retry shortly"
        )


class TransportGuard:
    """The guard of the module docstring: the Host names it allows and the body budget."""

    def __init__(self, budget: BodyBudget, names: frozenset[bytes] = LOOPBACK_NAMES) -> None:
        self.budget = budget
        self.names = names  # Host names (without port) of this machine
        self.allowed: set[bytes] = set()  # Host values already found to name this machine

    def exchange(self, scope: Scope, receive: Receive, send: Send) -> Exchange:
        """An HTTP request as the guard sees it; :meth:`Exchange.refusal` says if it may pass,
        :meth:`Exchange.release` ends it."""
        return Exchange(scope, receive, send, self)


async def refuse_websocket(send: Send) -> None:
    """A WebSocket session is never accepted."""
    await send({"type": "websocket.close", "code": 1008})


class Exchange:
    """One request as the guard sees it: its checked headers, its metered body."""

    __slots__ = ("_receive", "_send", "budget", "close", "guard", "scope", "status", "taken")

    def __init__(self, scope: Scope, receive: Receive, send: Send, guard: TransportGuard) -> None:
        self.scope = scope
        self.guard = guard  # its Host names, and those already found to be this machine's
        self._receive, self._send = receive, send
        self.budget = guard.budget
        self.taken = 0  # body bytes counted against the budget
        self.close = False  # whether the reply must close the connection
        self.status = 500  # the reply's status, once it starts (none: the request failed)

    def refusal(self) -> Refusal | None:
        """Why the request is refused, or None."""
        host = None
        for name, value in self.scope["headers"]:
            if name not in WATCHED:
                continue
            if name == b"host":
                if host is not None:
                    return Refusal(400, "BadRequest", "a request has one Host header; got two")
                host = value
            elif name == b"origin" or (name == b"sec-fetch-site" and value != b"none"):
                return from_browser(name, value)
            elif name == b"upgrade":
                return Refusal(400, "BadRequest", UPGRADE_REFUSED.format(shown(value)))
            elif name == b"expect":
                self.close = True  # unless the body is read, it never comes: see send
        if self.scope["method"] == "CONNECT":
            return Refusal(400, "BadRequest", "CONNECT is not served; this is not a proxy")
        if host in self.guard.allowed or self.host_allowed(host):
            return None
        return misdirected(host)

    def host_allowed(self, host: bytes | None) -> bool:
        """Whether ``host`` names this machine; remembered when it does (a few values)."""
        if host is None:
            return False
        name = host_name(host)
        server = self.scope.get("server")
        bound = server is not None and name == str(server[0]).lower().encode()
        if name in self.guard.names or bound:
            if len(self.guard.allowed) < REMEMBERED_HOSTS:
                self.guard.allowed.add(host)
            return True
        return False

    async def refuse(self, refusal: Refusal) -> None:
        """Answer ``refusal`` (the request goes no further)."""
        self.status = refusal.status
        await answer(self._send, refusal)

    def release(self) -> None:
        """Give the request's body bytes back to the budget (it has ended)."""
        self.budget.give_back(self.taken)

    async def receive(self) -> Message:
        self.close = False  # the body is being read: the connection stays usable
        message = await self._receive()
        body = message.get("body")
        if body:
            self.budget.take(len(body))
            self.taken += len(body)
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            extra = (NOSNIFF, CLOSE) if self.close else (NOSNIFF,)
            message = {**message, "headers": [*message.get("headers", ()), *extra]}
        await self._send(message)


def host_name(host: bytes) -> bytes:
    """The name in a Host header, lower case, without its port or IPv6 brackets."""
    if host.startswith(b"["):
        return host[1 : host.find(b"]")].lower()
    return host.split(b":", 1)[0].lower()


def shown(value: bytes) -> str:
    """A header value as a refusal shows it: decoded, cut short."""
    text = value.decode("latin-1")
    return text if len(text) <= SHOWN else text[:SHOWN] + "..."


def from_browser(name: bytes, value: bytes) -> Refusal:
    return Refusal(
        403,
        "Forbidden",
        "requests from web pages are refused: this server answers programs on this machine "
        f"(the request carried {name.decode()}: {shown(value)})",
    )


def misdirected(host: bytes | None) -> Refusal:
    seen = "no Host header" if host is None else f"Host {shown(host)}"
    return Refusal(
        421,
        "MisdirectedRequest",
        f"this server answers requests addressed to this machine ({HOSTS_HINT}); got {seen}",
    )


async def answer(send: Send, refusal: Refusal) -> None:
    """A refusal as ``{"error", "code"}``; the connection closes after it."""
    status, code, message = refusal
    body = orjson.dumps({"error": message, "code": code})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        NOSNIFF,
        CLOSE,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
