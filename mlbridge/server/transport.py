"""HTTP/1.1 connections with the limits that uvicorn's httptools protocol lacks.

uvicorn parses requests with httptools (llhttp), which bounds neither a request's head
(request line and headers) nor the time it may take: a connection that never completes a
request lives until the client hangs up, since uvicorn's keep-alive timer starts only after
a first reply. :class:`GuardedHttpProtocol` adds, per connection, before any of the app runs:

- at most ``max_connections`` connections: one more is answered 503 (``Retry-After``);
- a head of at most ``max_header_bytes`` (at most one socket read more is parsed): 431;
  the trailer fields after a chunked body likewise (httptools would gather one
  field's value with a copy per read: quadratic time on the event loop);
- the head within ``header_timeout_s`` of the connection, or of its first byte on a
  kept-alive connection: 408; a connection that sent nothing is closed without a reply;
- the body within ``body_timeout_s`` of the head: 408 (once the app has answered, the
  connection is simply closed);
- a request httptools cannot parse: 400, in the JSON form below (uvicorn's is plain text).

A kept-alive connection idle for ``timeout_keep_alive`` (uvicorn's setting, mlbridge's
``keep_alive_timeout_s``) after its last reply is closed, as uvicorn closes it; but where
uvicorn arms a timer after every reply and cancels it at the next read (~2.5 µs a request),
one timer per period checks the time of the last reply, and a connection that keeps
sending bytes that start no request is closed all the same.

On the only open connection (a notebook's loop of calls), a request whose head and body
arrive in the same read runs at once, in that read's callback, rather than as a task for a
later turn of the loop, and its reply leaves in one write; it becomes a task only if it has
to wait (:mod:`mlbridge.eager`). Otherwise a request starts as uvicorn starts it.

A refusal is ``{"error": ..., "code": ...}`` with ``Connection: close``; the server then
stops writing, drops what the client still sends for :data:`LINGER_S` (so the client reads
the reply, not a reset) and closes. The common request, whose head and body arrive in one
read, arms no timer: a few comparisons after each read are its whole cost.

uvicorn's h11 protocol bounds heads (``h11_max_incomplete_event_size``) but answers 400,
has no read deadline either and costs about 50 µs more per request (docs/security.md).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import Enum
from http import HTTPStatus
from typing import Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .. import eager
from ..settings import Settings

log = logging.getLogger("mlbridge")
LINGER_S = 1.0  # how long a refused connection's remaining input is read and dropped
RETRY_AFTER_S = 1


@dataclass(frozen=True)
class TransportLimits:
    """The per-connection limits (see the module docstring)."""

    max_connections: int = 1000
    max_header_bytes: int = 16 * 1024
    header_timeout_s: float = 10
    body_timeout_s: float = 30

    @classmethod
    def from_settings(cls, settings: Settings) -> TransportLimits:
        return cls(
            settings.max_connections,
            settings.max_header_bytes,
            settings.header_timeout_s,
            settings.body_timeout_s,
        )


class Phase(Enum):
    """What a connection is reading."""

    IDLE = "between requests"
    HEAD = "a request's head"
    BODY = "a request's body"


IDLE, HEAD, BODY = Phase.IDLE, Phase.HEAD, Phase.BODY


def refusal(status: int, code: str, message: str, retry_after: bool = False) -> bytes:
    """A complete HTTP/1.1 reply that closes the connection, JSON like every V2 error."""
    body = orjson.dumps({"error": message, "code": code})
    head = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        "x-content-type-options: nosniff",
    ]
    if retry_after:
        head.append(f"retry-after: {RETRY_AFTER_S}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of the module docstring."""

    limits: ClassVar[TransportLimits] = TransportLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.phase = HEAD  # a new connection waits for its first head
        self.head_bytes = 0
        self.begun = self.completed = 0  # requests whose head began, whose body ended
        self.received = False
        self.read_size = 0  # bytes of the read being parsed
        self.body_seen = False  # whether that read held body bytes
        self.trailing = False  # after a chunk's size line, before its data: maybe trailers
        self.refused = False
        self.pending: bytes | None = None  # a refusal decided inside a parser callback
        self.deadline: asyncio.TimerHandle | None = None
        self.deadline_for: tuple[Phase, int] | None = None
        self.linger: asyncio.TimerHandle | None = None
        self.parsing = False  # inside the parser: a request is started after the read
        self.starting: tuple[Any, Any] | None = None  # that request: (cycle, app)
        self.replied_at = 0.0  # the loop's time of the last reply completed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self.transport = transport
            message = (
                f"the server has {self.limits.max_connections} connections open, its limit "
                "(max_connections); retry shortly"
            )
            self.refuse(refusal(503, "ServerBusy", message, retry_after=True))
            return
        super().connection_made(transport)
        self.arm()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self.deadline, self.linger, self.timeout_keep_alive_task):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return  # lingering: drop the rest of what the client sends
        self.received = True
        self.read_size = len(data)
        begun, completed, trailing = self.begun, self.completed, self.trailing
        self.body_seen = False
        self.parsing = True
        try:
            super().data_received(data)
        finally:
            self.parsing = False
        starting, self.starting = self.starting, None
        if starting is not None:
            self.start(*starting)
        if self.refused or self.transport.is_closing():
            return
        if self.phase is HEAD:
            self.count_head(len(data), began=begun != self.begun, ended=completed != self.completed)
        elif trailing and self.trailing and not self.body_seen:
            self.head_bytes += len(data)  # trailer fields, after the last chunk: a head's limit
        if self.head_bytes > self.limits.max_header_bytes:
            self.refuse_head_too_large()
            return
        if self.deadline is None and self.phase is IDLE:
            return  # the common case: whole requests per read, no deadline running
        if self.deadline_for != (self.phase, self.completed):
            self.arm()

    def count_head(self, size: int, began: bool, ended: bool) -> None:
        """Add this read to the head being received (where in it a head began is unknown)."""
        if began:
            self.head_bytes = 0 if ended else size
        else:
            self.head_bytes += size

    # httptools callbacks (uvicorn's, plus the phase)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.phase = HEAD
        self.begun += 1

    def on_headers_complete(self) -> None:
        limit = self.limits.max_header_bytes
        if self.head_bytes + self.read_size > limit and self.head_size() > limit:
            self.pending = refusal(431, "HeaderTooLarge", head_too_large(limit))
            raise HeadTooLarge  # httptools stops; uvicorn calls send_400_response
        super().on_headers_complete()
        self.phase = BODY

    def head_size(self) -> int:
        """The size of the head just parsed (request line and headers, as sent but spaces)."""
        line = len(self.parser.get_method()) + len(self.url) + len(" HTTP/1.1\r\n") + 1
        return line + sum(len(name) + len(value) + 4 for name, value in self.headers) + 2

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request httptools cannot parse, or that a callback refused."""
        reply = self.pending or refusal(400, "BadRequest", "malformed HTTP/1.1 request")
        if self.replying():
            self.transport.close()
        else:
            self.refuse(reply)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.phase = IDLE
        self.completed += 1
        self.trailing = False

    def on_body(self, body: bytes) -> None:
        self.body_seen = True
        super().on_body(body)

    def on_chunk_header(self) -> None:
        """A chunk's size line; the bytes after the last one's, up to the end, are trailers."""
        self.trailing = True  # until body bytes follow (then it was not the last chunk)
        self.head_bytes = 0

    def on_chunk_complete(self) -> None:
        self.trailing = False

    def _unsupported_upgrade_warning(self) -> None:
        """The guard refuses every upgrade request (mlbridge.server.guard): nothing to warn."""

    # starting a request

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        """uvicorn's start of a request (at the end of its head): one whose head ends in the
        read being parsed starts once the read is parsed, when its body may be complete."""
        if self.parsing:
            self.starting = (cycle, app)
        else:
            super()._start_asgi_task(cycle, app)

    def start(self, cycle: Any, app: Any) -> None:
        """Run a request at once if its body is all here and its connection is the only one
        open (what it writes meanwhile leaves in one piece); else as uvicorn runs it."""
        if cycle.more_body or len(self.connections) > 1:
            super()._start_asgi_task(cycle, app)  # with company it would wait to batch anyway
            return
        corked = cycle.transport = Corked(self.transport)
        try:
            task = eager.start(cycle.run_asgi(app), self.loop)
        finally:
            corked.flush()
            cycle.transport = self.transport
        if task is not None:  # it waits: tracked as uvicorn tracks its own
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)

    # keeping a connection alive between requests

    def on_response_complete(self) -> None:
        """uvicorn's, but the keep-alive timer is armed only if none is pending."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self.replied_at = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.keep_alive_until(self.replied_at + self.timeout_keep_alive)

    def _unset_keepalive_if_required(self) -> None:
        """uvicorn cancels its keep-alive timer at each read; this one stays (it checks)."""

    def keep_alive_until(self, when: float) -> None:
        self.timeout_keep_alive_task = self.loop.call_at(when, self.keep_alive_expired)

    def keep_alive_expired(self) -> None:
        """Close the connection if it has been idle since its last reply for the whole
        period; if a request came since, wait for the period after the latest reply."""
        self.timeout_keep_alive_task = None
        if self.transport.is_closing() or self.refused:
            return
        if self.phase is not IDLE or not self.cycle.response_complete:
            return  # a request under way: its deadlines rule, and its reply re-arms this
        due = self.replied_at + self.timeout_keep_alive
        if due > self.loop.time():
            self.keep_alive_until(due)
        else:
            self.transport.close()

    # deadlines and refusals

    def arm(self) -> None:
        """Start the deadline of the current phase (none between requests)."""
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        self.deadline_for = (self.phase, self.completed)
        if self.phase is HEAD:
            self.deadline = self.loop.call_later(self.limits.header_timeout_s, self.expire)
        elif self.phase is BODY:
            self.deadline = self.loop.call_later(self.limits.body_timeout_s, self.expire)

    def expire(self) -> None:
        """The current phase ran out of time."""
        self.deadline = None
        if self.transport.is_closing() or self.refused:
            return
        if self.server_behind():
            self.arm()  # not the client's delay: wait another period
        elif not self.received or self.replying():
            self.transport.close()  # nothing was asked, or a reply is (or was) under way
        elif self.phase is HEAD:
            limit = self.limits.header_timeout_s
            self.refuse(refusal(408, "RequestTimeout", _late("headers", limit, "header")))
        else:
            limit = self.limits.body_timeout_s
            self.refuse(refusal(408, "RequestTimeout", _late("body", limit, "body")))

    def server_behind(self) -> bool:
        """Whether the server, not the client, holds the request up: it stopped reading the
        body (a pipelined request waits), or the previous reply is still due."""
        if self.phase is BODY:
            return self.flow.read_paused
        return self.cycle is not None and not self.cycle.response_complete

    def replying(self) -> bool:
        """Whether no refusal may be written now: the request being read has its reply
        already, or (while a head is read) the previous request's reply is still due."""
        cycle = self.cycle
        if cycle is None:
            return False
        if self.phase is BODY:
            return cycle.response_started
        return not cycle.response_complete

    def refuse_head_too_large(self) -> None:
        self.pending = refusal(431, "HeaderTooLarge", head_too_large(self.limits.max_header_bytes))
        self.send_400_response("")

    def refuse(self, reply: bytes) -> None:
        """Send ``reply``, stop writing, drop the client's input for a moment, then close."""
        self.refused = True
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app, if still reading, hears the client left
            cycle.message_event.set()
        self.transport.write(reply)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.linger = self.loop.call_later(LINGER_S, self.transport.close)
        log.debug("refused a connection: %s", reply.split(b"\r\n", 1)[0].decode())


class Corked:
    """A transport that holds the first thing written (a reply's head) until the next (its
    body), so that the two leave in one write, one system call; then writes pass straight
    through. :meth:`flush` sends a head still held."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.held: bytes | None = None
        self.passing = False

    def write(self, data: bytes) -> None:
        if self.passing:
            self.transport.write(data)
        elif self.held is None:
            self.held = data
        else:
            self.transport.write(self.held + data)
            self.held, self.passing = None, True

    def flush(self) -> None:
        if self.held is not None:
            self.transport.write(self.held)
        self.held, self.passing = None, True

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class HeadTooLarge(Exception):
    """Raised inside the parser to stop it at a head over the limit."""


def head_too_large(limit: int) -> str:
    return f"the request line and headers exceed {limit // 1024} KiB, the limit (max_header_kb)"


def _late(part: str, seconds: float, setting: str) -> str:
    return (
        f"the request's {part} did not arrive within {seconds:g} s, the limit ({setting}_timeout_s)"
    )


def guarded_protocol(limits: TransportLimits) -> type[GuardedHttpProtocol]:
    """A protocol class for uvicorn's ``Config(http=...)`` that enforces ``limits``."""
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), {"limits": limits})
