"""The transport runs a request whose body is all in hand at once, without a task of its own.

In process: uvicorn's config and our protocol on a transport that records what is written,
so that what happens before the loop turns again can be seen. Real sockets are in
test_hardening_http.py and every HTTP test that starts a server.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from mlbridge.server.transport import Corked, TransportLimits, guarded_protocol


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.writes = 0
        self.closed = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written += data
        self.writes += 1

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )


def answering(waits: bool = False):
    """An ASGI app that answers with the body it read (after a wait, if ``waits``)."""

    async def app(scope, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if waits:
            await asyncio.sleep(0.001)
        reply = b"got " + body
        length = [(b"content-length", str(len(reply)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": length})
        await send({"type": "http.response.body", "body": reply})

    return app


def connected(app) -> tuple[Any, RecordingTransport, ServerState]:
    config = uvicorn.Config(
        app, http=guarded_protocol(TransportLimits()), lifespan="off", log_level="warning"
    )
    config.load()
    state = ServerState()
    protocol = config.http_protocol_class(config=config, server_state=state, app_state={})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    return protocol, transport, state


def request(body: bytes) -> bytes:
    return b"POST /x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


def replies(transport: RecordingTransport) -> list[bytes]:
    return [part.split(b"\r\n\r\n", 1)[1] for part in transport.written.split(b"HTTP/1.1 ")[1:]]


def test_a_whole_request_is_answered_within_its_read_without_a_task() -> None:
    async def main() -> None:
        protocol, transport, state = connected(answering())
        protocol.data_received(request(b"one"))
        assert replies(transport) == [b"got one"]  # before the loop turned
        assert transport.writes == 1  # head and body in one piece
        assert not state.tasks
        protocol.data_received(request(b"two"))  # the next on the kept-alive connection
        assert replies(transport) == [b"got one", b"got two"]
        protocol.connection_lost(None)

    asyncio.run(main())


def test_a_request_whose_body_comes_later_is_answered_once_it_is_in() -> None:
    async def main() -> None:
        protocol, transport, state = connected(answering())
        whole = request(b"a body sent in two reads")
        protocol.data_received(whole[:60])
        assert len(state.tasks) == 1 and not transport.written  # waits for its body
        protocol.data_received(whole[60:])
        for _ in range(3):
            await asyncio.sleep(0)
        assert replies(transport) == [b"got a body sent in two reads"]
        assert not state.tasks
        protocol.connection_lost(None)

    asyncio.run(main())


def test_pipelined_requests_in_one_read_are_answered_in_order() -> None:
    async def main() -> None:
        protocol, transport, state = connected(answering())
        protocol.data_received(request(b"first") + request(b"second") + request(b"third"))
        for _ in range(5):
            await asyncio.sleep(0)
        assert replies(transport) == [b"got first", b"got second", b"got third"]
        assert not state.tasks
        protocol.connection_lost(None)

    asyncio.run(main())


def test_a_reply_that_closes_the_connection_is_written_before_the_close() -> None:
    async def main() -> None:
        protocol, transport, _ = connected(answering())
        protocol.data_received(request(b"last").replace(b"HTTP/1.1", b"HTTP/1.0"))
        assert replies(transport) == [b"got last"] and transport.closed

    asyncio.run(main())


def test_with_another_connection_open_a_request_starts_as_a_task() -> None:
    async def main() -> None:
        protocol, transport, state = connected(answering())
        state.connections.add(object())  # another client: requests may batch, so may wait
        protocol.data_received(request(b"company"))
        assert not transport.written and len(state.tasks) == 1
        await asyncio.wait_for(asyncio.gather(*state.tasks), 5)
        assert replies(transport) == [b"got company"]

    asyncio.run(main())


def test_a_request_that_waits_becomes_a_tracked_task() -> None:
    async def main() -> None:
        protocol, transport, state = connected(answering(waits=True))
        protocol.data_received(request(b"slow"))
        assert not transport.written and len(state.tasks) == 1  # shutdown waits for it
        await asyncio.wait_for(asyncio.gather(*state.tasks), 5)
        await asyncio.sleep(0)  # the done callback
        assert replies(transport) == [b"got slow"]
        assert transport.writes == 2  # written as uvicorn writes, once it went on as a task
        assert not state.tasks
        protocol.connection_lost(None)

    asyncio.run(main())


def test_corked_joins_a_head_to_the_body_after_it_then_lets_writes_through() -> None:
    transport = RecordingTransport()
    corked = Corked(transport)
    corked.write(b"head ")
    assert transport.writes == 0
    corked.write(b"body")
    corked.write(b" more")  # a streamed reply's next part goes at once
    assert (transport.writes, bytes(transport.written)) == (2, b"head body more")
    corked.flush()
    assert transport.writes == 2


def test_corked_sends_a_lone_head_when_flushed_or_closed() -> None:
    for finish in ("flush", "close"):
        transport = RecordingTransport()
        corked = Corked(transport)
        corked.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        getattr(corked, finish)()
        assert bytes(transport.written).startswith(b"HTTP/1.1 204") and transport.writes == 1
        assert transport.closed == (finish == "close")
        assert not corked.is_closing() or finish == "close"  # the rest is the transport's
