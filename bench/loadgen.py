"""Raw HTTP clients for the bench: the least client work per request, so servers are measured.

- :class:`Connection`: a blocking keep-alive socket for sequential queries (and bulk ones).
- :func:`load`: N concurrent keep-alive clients on one asyncio (uvloop) event loop, each an
  ``asyncio.Protocol`` that sends its next request from ``data_received``; a Python load
  generator built on threads tops out near 5.7k req/s here (FIELD-NOTES).
- ``fresh=True``: a new connection per request (the original design speaks HTTP/1.0 and
  closes each connection).

Every loop is bounded: by a request count, or by a deadline plus a grace period after which
unfinished requests count as errors. Loopback only.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field

HOST = "127.0.0.1"
RECV = 1 << 18


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def request_bytes(
    method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    """One HTTP/1.1 request, built once and sent many times."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}"]
    if method != "GET" or body:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status and lower-cased headers of a response head (without the blank line)."""
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers


class Connection:
    """A blocking HTTP/1.1 connection to 127.0.0.1:port."""

    def __init__(self, port: int, timeout_s: float = 120.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def send(self, raw: bytes) -> Reply:
        """Send a prepared request; read its whole reply."""
        self.sock.sendall(raw)
        return self.read_reply()

    def read_reply(self) -> Reply:
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n")
        while end < 0:
            buffer += self._recv()
            end = buffer.find(b"\r\n\r\n")
        status, headers = parse_head(buffer[:end])
        start = end + 4
        if "content-length" not in headers:  # HTTP/1.0: the body runs to the end
            chunks = [buffer[start:]]
            while chunk := self.sock.recv(RECV):
                chunks.append(chunk)
            self.buffer = b""
            return Reply(status, headers, b"".join(chunks))
        need = start + int(headers["content-length"])
        if len(buffer) < need:
            whole = bytearray(buffer)
            while len(whole) < need:
                whole += self._recv()
            buffer = bytes(whole)
        self.buffer = buffer[need:]
        return Reply(status, headers, buffer[start:need])

    def _recv(self) -> bytes:
        chunk = self.sock.recv(RECV)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        return chunk

    def close(self) -> None:
        self.sock.close()


def one_request(port: int, raw: bytes, timeout_s: float = 120.0) -> Reply:
    """One request on its own connection."""
    connection = Connection(port, timeout_s)
    try:
        return connection.send(raw)
    finally:
        connection.close()


def sequential(port: int, raws: list[bytes], count: int, fresh: bool = False) -> list[float]:
    """Seconds per request for ``count`` requests sent one after another."""
    times = []
    connection = None if fresh else Connection(port)
    for index in range(count):
        raw = raws[index % len(raws)]
        start = time.perf_counter()
        reply = one_request(port, raw) if connection is None else connection.send(raw)
        times.append(time.perf_counter() - start)
        if reply.status != 200:
            raise RuntimeError(f"status {reply.status}: {reply.body[:300]!r}")
    if connection is not None:
        connection.close()
    return times


@dataclass
class LoadResult:
    """What a fixed-time load run saw."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0

    @property
    def requests(self) -> int:
        return len(self.latencies)


class _Run:
    def __init__(self, raws: list[bytes], deadline: float) -> None:
        self.raws = raws
        self.deadline = deadline
        self.result = LoadResult()
        self.sent = 0

    def next_raw(self) -> bytes:
        self.sent += 1
        return self.raws[self.sent % len(self.raws)]


class _KeepAliveClient(asyncio.Protocol):
    """One client: a request in flight at a time, the next sent as the reply completes."""

    def __init__(self, run: _Run, finished: asyncio.Future) -> None:
        self.run = run
        self.finished = finished
        self.in_flight = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._send()

    def _send(self) -> None:
        self.buffer = bytearray()
        self.expected = -1
        self.in_flight = True
        self.started = time.perf_counter()
        self.transport.write(self.run.next_raw())

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.expected < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            at = head.find(b"content-length:")
            self.status = int(head[9:12])
            self.expected = end + 4 + int(head[at + 15 : head.find(b"\r\n", at)])
        if len(self.buffer) < self.expected:
            return
        now = time.perf_counter()
        self.in_flight = False
        if self.status == 200:
            self.run.result.latencies.append(now - self.started)
        else:
            self.run.result.errors += 1
        if now < self.run.deadline:
            self._send()
        else:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.in_flight:
            self.run.result.errors += 1
            self.in_flight = False
        if not self.finished.done():
            self.finished.set_result(None)


async def _keep_alive_load(port: int, run: _Run, clients: int, grace_s: float) -> None:
    loop = asyncio.get_running_loop()
    finished = [loop.create_future() for _ in range(clients)]
    transports = []
    for done in finished:
        try:
            transport, _ = await loop.create_connection(
                lambda done=done: _KeepAliveClient(run, done), HOST, port
            )
            transports.append(transport)
        except OSError:
            run.result.errors += 1
            done.set_result(None)
    left = run.deadline + grace_s - time.perf_counter()
    _, pending = await asyncio.wait(finished, timeout=max(left, 0.1))
    for transport in transports:
        transport.abort()  # a reply still missing after the grace period is an error
    if pending:
        await asyncio.wait(pending, timeout=1.0)


async def _fresh_client(port: int, run: _Run, timeout_s: float) -> None:
    while time.perf_counter() < run.deadline:
        started = time.perf_counter()
        left = run.deadline + timeout_s - started
        try:
            reply = await asyncio.wait_for(_fresh_request(port, run.next_raw()), left)
        except (OSError, asyncio.TimeoutError, ValueError):
            run.result.errors += 1
            continue
        if reply.startswith(b"HTTP/1.0 200") or reply.startswith(b"HTTP/1.1 200"):
            run.result.latencies.append(time.perf_counter() - started)
        else:
            run.result.errors += 1


async def _fresh_request(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(raw)
        return await reader.read()  # HTTP/1.0: to the end of the stream
    finally:
        writer.close()


def load(
    port: int,
    raws: list[bytes],
    clients: int,
    seconds: float,
    fresh: bool = False,
    grace_s: float = 10.0,
) -> LoadResult:
    """``clients`` concurrent clients sending ``raws`` in turn for ``seconds``."""

    async def main() -> LoadResult:
        start = time.perf_counter()
        run = _Run(raws, start + seconds)
        if fresh:
            tasks = [_fresh_client(port, run, grace_s) for _ in range(clients)]
            await asyncio.wait_for(asyncio.gather(*tasks), seconds + grace_s + 5)
        else:
            await _keep_alive_load(port, run, clients, grace_s)
        run.result.seconds = time.perf_counter() - start
        return run.result

    return run_loop(main())


def run_loop(main):
    """Run a coroutine on uvloop when it is installed (less client CPU per request)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
