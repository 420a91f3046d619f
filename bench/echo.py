"""The HTTP floors: servers that read a request and answer it without doing any work.

    python -m bench.echo asgi PORT       # a raw ASGI app on uvicorn (uvloop + httptools),
                                         # configured as mlbridge configures uvicorn
    python -m bench.echo asyncio PORT    # a minimal HTTP/1.1 server on an asyncio Protocol

Both read the whole body and reply ``200`` with ``reply=N`` bytes (from the query string;
``REPLY_BYTES`` when absent), so a floor moves the same bytes as the server it is compared
with. Any path and method is answered, ``GET /v2/health/ready`` included (the readiness
probe of the bench). Loopback only.
"""

from __future__ import annotations

import asyncio
import sys

HOST = "127.0.0.1"
REPLY_BYTES = 160  # about an mlbridge V2 JSON reply of ten logits
_REPLIES: dict[int, bytes] = {}


def reply_body(query: bytes) -> bytes:
    """The reply of ``reply=N`` bytes (cached: the floor must not build it per request)."""
    size = REPLY_BYTES
    for item in query.split(b"&"):
        if item.startswith(b"reply="):
            size = int(item[6:])
    if size not in _REPLIES:
        _REPLIES[size] = b"x" * size
    return _REPLIES[size]


async def asgi_echo(scope, receive, send) -> None:
    """A raw ASGI app: read the body, answer the reply bytes."""
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    body = reply_body(scope.get("query_string", b""))
    headers = [
        (b"content-type", b"application/octet-stream"),
        (b"content-length", b"%d" % len(body)),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def run_asgi(port: int) -> None:
    import uvicorn

    uvicorn.run(
        asgi_echo,
        host=HOST,
        port=port,
        lifespan="off",
        access_log=False,
        log_level="warning",
        server_header=False,
        timeout_keep_alive=30,
    )


class EchoProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive, Content-Length bodies only: the least an HTTP server can do.

    Bodies are counted and dropped as they arrive, as the ASGI echo drops them.
    """

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.head = bytearray()
        self.remaining = -1  # body bytes still to come, once the head is read
        self.reply = b""

    def data_received(self, data: bytes) -> None:
        while True:
            if self.remaining < 0:
                self.head += data
                end = self.head.find(b"\r\n\r\n")
                if end < 0:
                    return
                data = bytes(self.head[end + 4 :])
                self._read_head(bytes(self.head[:end]).lower())
                self.head = bytearray()
            taken = min(len(data), self.remaining)
            self.remaining -= taken
            data = data[taken:]
            if self.remaining > 0:
                return
            self.remaining = -1
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
                b"content-length: %d\r\n\r\n%b" % (len(self.reply), self.reply)
            )
            if not data:
                return

    def _read_head(self, head: bytes) -> None:
        head += b"\r\n"  # every header line ends with one, the last included
        start = head.find(b"content-length:")
        self.remaining = int(head[start + 15 : head.find(b"\r\n", start)]) if start >= 0 else 0
        self.reply = reply_body(head.split(b" ", 2)[1].partition(b"?")[2])


def run_asyncio(port: int) -> None:
    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(EchoProtocol, HOST, port)
        async with server:
            await server.serve_forever()

    run_loop(serve())


def run_loop(main) -> None:
    """Run ``main`` on uvloop (the event loop uvicorn uses here), else on asyncio's."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


if __name__ == "__main__":
    kind, port_text = sys.argv[1], sys.argv[2]
    {"asgi": run_asgi, "asyncio": run_asyncio}[kind](int(port_text))
