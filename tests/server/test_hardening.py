"""The guard, the body reading and the limits, in process: cheap to run, every route covered.

Real sockets (timeouts, header sizes, connection limits, memory) are proved against a real
server in test_hardening_http.py; this module covers what the app itself decides.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from support.fakes import AUTH, HOME, SECRET, fake_registry

from mlbridge.auth import TokenAuthenticator
from mlbridge.errors import ConfigError, ServerBusy
from mlbridge.server.app import create_app
from mlbridge.server.cas import FIRST_LINE_MAX, CasRoute
from mlbridge.server.files import LogBound, hold_lock, lock_paths, open_log
from mlbridge.server.guard import BodyBudget, TransportGuard
from mlbridge.server.policy import Access
from mlbridge.settings import load_settings

PATH_PARAMETERS = {"name": "echo", "version": "1"}
TEXT = b"{1., 2., 3.}"


def url(route: Route) -> str:
    return route.path.format(**{name: PATH_PARAMETERS[name] for name in route.param_convertors})


def method(route: Route) -> str:
    return "POST" if "POST" in (route.methods or ()) else "GET"


def small_app(**settings: object):
    """The app on the fakes with its own settings (a fresh budget and queue)."""
    resolved = load_settings(environ={}, home=str(HOME), **settings)
    return create_app(fake_registry(), TokenAuthenticator(SECRET, resolved.token_file), resolved)


# Host allow-list (DNS rebinding), browsers, upgrades


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.0.0.1:8000", "localhost", "LocalHost:1", "[::1]:9", "testserver"],
)
def test_hosts_naming_this_machine_are_served(anon, host: str) -> None:
    reply = anon.get("/v2/health/live", headers={"host": host})
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:8000",
        "127.0.0.1.nip.io",
        "localhost.evil.example",
        "[::2]:80",
        "127.0.0.2",
        "",
    ],
)
def test_any_other_host_is_misdirected(anon, host: str) -> None:
    reply = anon.get("/v2/health/live", headers={"host": host})
    assert reply.status_code == 421
    assert reply.json()["code"] == "MisdirectedRequest"
    assert "addressed to this machine" in reply.json()["error"]


def test_the_host_check_comes_before_the_secret(app) -> None:
    with TestClient(app, headers=AUTH) as client:
        reply = client.get("/v2", headers={"host": "evil.example"})
    assert reply.status_code == 421 and SECRET not in reply.text


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://evil.example"},
        {"origin": "null"},
        {"origin": "http://127.0.0.1:8000"},
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-origin"},
    ],
    ids=["cross-origin", "opaque origin", "same-origin Origin", "cross-site", "same-origin"],
)
def test_browser_requests_are_refused_on_every_route(app, http, headers) -> None:
    for route in app.routes:
        reply = http.request(method(route), url(route), headers=headers, content=TEXT)
        assert reply.status_code == 403, f"{route.path}: {reply.text}"
        assert reply.json()["code"] == "Forbidden"
        assert "web pages" in reply.json()["error"]


def test_a_url_typed_by_the_user_is_served(anon) -> None:
    reply = anon.get("/v2/health/live", headers={"sec-fetch-site": "none"})
    assert reply.status_code == 200


@pytest.mark.parametrize("upgrade", ["websocket", "h2c"])
def test_protocol_upgrades_are_refused(http, upgrade: str) -> None:
    headers = {"connection": "Upgrade", "upgrade": upgrade}
    reply = http.get("/v2/health/live", headers=headers)
    assert reply.status_code == 400 and "upgrades are not served" in reply.json()["error"]
    assert reply.headers["connection"] == "close"


def test_a_websocket_session_is_never_accepted(anon) -> None:
    with pytest.raises(WebSocketDisconnect) as closed, anon.websocket_connect("/echo"):
        pass
    assert closed.value.code == 1008


def test_no_redirect_echoes_the_host(http) -> None:
    for path in ("/v2/models/", "/v2/health/live/", "/echo/"):
        reply = http.get(path, follow_redirects=False, headers={"host": "localhost"})
        assert reply.status_code in (404, 405), path
        assert "location" not in reply.headers


def test_every_reply_says_nosniff(app, http, anon) -> None:
    replies = [
        http.get("/v2/health/live"),  # 200
        anon.get("/v2"),  # 401
        http.get("/nowhere/at/all"),  # 404
        http.put("/v2"),  # 405
        http.post("/echo", content=b"{1., 2.}"),  # 400 from a CAS route
        anon.get("/v2", headers={"host": "evil.example"}),  # 421
        anon.get("/v2", headers={"origin": "https://evil.example"}),  # 403
    ]
    for route in app.routes:
        replies.append(http.request(method(route), url(route), content=TEXT))
    for reply in replies:
        assert reply.headers["x-content-type-options"] == "nosniff", reply.request.url


def test_a_reply_to_a_client_awaiting_100_continue_closes_the_connection(anon) -> None:
    headers = {"expect": "100-continue", "authorization": "Bearer wrong"}
    reply = anon.post("/v2/models/echo/infer", headers=headers, content=b"{}")
    assert reply.status_code == 401 and reply.headers["connection"] == "close"
    read = anon.post("/echo", headers={"expect": "100-continue"}, content=SECRET.encode() + b"\n1.")
    assert read.status_code == 400 and "connection" not in read.headers  # the body was read


# Nothing costly before the secret: how much of a body is read before it is refused


class Body:
    """An ASGI ``receive`` that hands out ``chunks`` and counts how many were taken."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.taken = 0

    async def __call__(self) -> dict:
        if self.taken == len(self.chunks):
            return {"type": "http.disconnect"}
        self.taken += 1
        more = self.taken < len(self.chunks)
        return {"type": "http.request", "body": self.chunks[self.taken - 1], "more_body": more}


def call(app, path: str, body: Body, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """POST ``body`` to ``path`` straight through ASGI; (status, reply body)."""
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    raw = [(b"host", b"127.0.0.1")] + [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": raw, "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 1),
    }  # fmt: skip
    asyncio.run(app(scope, body, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


MIB_CHUNKS = [b"0" * (1 << 20)] * 64  # a 64 MiB body, in 1 MiB chunks


@pytest.mark.parametrize(
    ("first", "why"),
    [
        (b"not-the-secret\n", b"wrong secret"),
        (b"{1., 2., 3.}\n", b"missing secret"),
        (b"8:\x00\x01", b"missing secret"),
        (b"\n", b"missing secret"),
    ],
    ids=["wrong first line", "data, no secret", "WXF, no secret", "empty first line"],
)
def test_a_headerless_cas_body_is_read_no_further_than_its_first_line(app, first, why) -> None:
    body = Body([first, *MIB_CHUNKS])
    status, reply = call(app, "/echo", body)
    assert status == 401 and why in reply
    assert body.taken == 1


def test_a_first_line_without_newline_is_read_up_to_the_bound(app) -> None:
    body = Body([b"x" * 100] * 1000)
    status, reply = call(app, "/echo/gradient", body)
    assert status == 401 and b"missing secret" in reply
    assert body.taken == -(-FIRST_LINE_MAX // 100)  # the chunks that hold the first KiB


def test_the_first_line_secret_then_the_rest_is_read(app) -> None:
    body = Body([SECRET.encode()[:5], SECRET.encode()[5:] + b"\n{1., ", b"2., ", b"3.}"])
    assert call(app, "/echo", body) == (200, TEXT)
    assert body.taken == 4


@pytest.mark.parametrize("path", ["/echo", "/v2/models/echo/infer"])
def test_a_wrong_bearer_secret_reads_no_body(app, path: str) -> None:
    body = Body(MIB_CHUNKS)
    status, _ = call(app, path, body, {"authorization": "Bearer wrong"})
    assert status == 401 and body.taken == 0


def test_a_declared_size_over_the_limit_is_refused_before_reading(app) -> None:
    for headers in ({"authorization": f"Bearer {SECRET}"}, {}):
        body = Body(MIB_CHUNKS)
        declared = {**headers, "content-length": str(1 << 30)}
        status, reply = call(app, "/echo", body, declared)
        assert status == 413 and b"exceeds the limit of 67108864 bytes" in reply
        assert body.taken == 0


# The body budget and the inference queue: 503 with Retry-After, in the route's format


def test_bodies_past_the_budget_are_503_in_the_routes_format() -> None:
    app = small_app(max_body_mb=1, body_budget_mb=2)
    budget: BodyBudget = app.state.body_budget
    budget.take(budget.limit - 1000)  # other requests hold all but 1000 bytes
    with TestClient(app, headers=AUTH) as client:
        declared = client.post("/echo", content=b"{" + b"1., " * 400 + b"1.}")
        assert declared.status_code == 503 and declared.headers["retry-after"] == "1"
        assert declared.text.startswith('Failure["MLBridge"') and "body_budget_mb" in declared.text

        def chunked():
            yield b"{" + b"1., " * 200
            yield b"1., " * 200 + b"1.}"

        streamed = client.post("/v2/models/echo/infer", content=chunked())
        assert streamed.status_code == 503 and streamed.json()["code"] == "ServerBusy"
        budget.give_back(budget.limit - 1000)
        assert client.post("/echo", content=TEXT).status_code == 200
    assert budget.held == 0  # every request gave back what it took


def test_the_budget_is_given_back_whatever_happens(app) -> None:
    budget: BodyBudget = app.state.body_budget
    with TestClient(app, headers=AUTH) as client:
        client.post("/echo", content=TEXT)  # 200
        client.post("/echo", content=b"{1., 2.}")  # 400
        client.post("/v2/models/echo/infer", content=b"not json")  # 400
        client.post("/failing", content=TEXT)  # 500
    assert budget.held == 0


def test_the_inference_queue_is_bounded() -> None:
    app = small_app(workers=1, max_queue=1)

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", headers=AUTH
        ) as client:
            return await asyncio.gather(*(client.post("/slow", content=TEXT) for _ in range(4)))

    replies = asyncio.run(burst())
    assert sorted(reply.status_code for reply in replies) == [200, 200, 503, 503]
    busy = next(reply for reply in replies if reply.status_code == 503)
    assert busy.headers["retry-after"] == "1" and "max_queue 1" in busy.text
    assert app.state.service.in_inference == 0


def test_server_busy_is_a_503_that_says_when_to_retry() -> None:
    assert ServerBusy.status == 503 and ServerBusy.retry_after_s == 1


# The guard's cost: single-digit microseconds per request


def test_the_guard_costs_microseconds() -> None:
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def send(message):
        pass

    async def receive():
        return {"type": "http.request", "body": b""}

    headers = [(b"host", b"127.0.0.1:8000"), (b"accept", b"*/*"), (b"authorization", b"B x")]
    scope = {"type": "http", "method": "GET", "headers": headers, "server": ("127.0.0.1", 8000)}
    guard = TransportGuard(BodyBudget(1 << 20))

    async def guarded(scope, receive, send):  # what the app does around every request
        exchange = guard.exchange(scope, receive, send)
        assert exchange.refusal() is None
        try:
            await app(scope, exchange.receive, exchange.send)
        finally:
            exchange.release()

    async def per_call(target, n: int = 20_000) -> float:
        started = time.perf_counter()
        for _ in range(n):
            await target(scope, receive, send)
        return (time.perf_counter() - started) / n

    async def overhead() -> float:
        return await per_call(guarded) - await per_call(app)

    runs = sorted(asyncio.run(overhead()) for _ in range(3))
    assert runs[1] < 10e-6, f"the guard costs {runs[1] * 1e6:.1f} µs per request"


# Settings


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MLBRIDGE_BODY_BUDGET_MB": "32"}, "must be at least MLBRIDGE_MAX_BODY_MB (64)"),
        ({"MLBRIDGE_MAX_CONNECTIONS": "0"}, "MLBRIDGE_MAX_CONNECTIONS: expected at least 1"),
        ({"MLBRIDGE_HEADER_TIMEOUT_S": "-1"}, "MLBRIDGE_HEADER_TIMEOUT_S: expected at least 1"),
    ],
)
def test_limits_that_cannot_work_are_refused(environ, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(environ=environ)


def test_the_default_body_limit_is_64_mib() -> None:
    settings = load_settings(environ={})
    assert settings.max_body_bytes == 64 << 20 and settings.body_budget_bytes == 256 << 20


# Files: the lock and the detached log


def test_a_held_lock_names_its_holder_and_goes_with_it(tmp_path: Path) -> None:
    path = tmp_path / "server.lock"
    held = hold_lock(path)
    try:
        with pytest.raises(ConfigError, match=f"already running \\(pid {os.getpid()}"):
            hold_lock(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.close(held)
    os.close(hold_lock(path))  # released with its descriptor


def test_a_token_file_elsewhere_is_locked_too(tmp_path: Path) -> None:
    settings = load_settings(environ={}, home=str(tmp_path / "h"), token_file=str(tmp_path / "t"))
    assert lock_paths(settings) == [tmp_path / "h" / "server.lock", tmp_path / "t.lock"]
    assert lock_paths(load_settings(environ={}, home=str(tmp_path))) == [tmp_path / "server.lock"]


def test_a_lock_is_never_taken_through_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "server.lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="cannot open the lock file"):
        hold_lock(tmp_path / "server.lock")
    assert not (tmp_path / "elsewhere").exists()


def test_the_log_is_private_and_never_a_link(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("old\n")
    log.chmod(0o644)
    os.close(open_log(log, 1 << 20))
    assert stat.S_IMODE(log.stat().st_mode) == 0o600 and log.read_text() == "old\n"
    log.unlink()
    target = tmp_path / "target"
    log.symlink_to(target)
    with pytest.raises(ConfigError, match="not a regular file"):
        open_log(log, 1 << 20)
    assert not target.exists()


def test_a_full_log_is_moved_aside_at_start(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_bytes(b"x" * 2000)
    os.close(open_log(log, 1000))
    assert (tmp_path / "server.log.1").read_bytes() == b"x" * 2000
    assert log.read_bytes() == b""


def test_a_detached_servers_log_is_rotated_while_it_runs(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    script = (
        "import sys; from pathlib import Path; from mlbridge.server.files import LogBound\n"
        f"bound = LogBound(Path({str(log)!r}), 1000)\n"
        "print(bound.is_our_output(), flush=True); sys.stderr.write('x' * 1500); "
        "sys.stderr.flush(); bound.rotate(); print('after', flush=True)\n"
    )
    descriptor = open_log(log, 1000)
    try:
        subprocess.run(
            [sys.executable, "-c", script], stdout=descriptor, stderr=descriptor, check=True
        )
    finally:
        os.close(descriptor)
    assert (tmp_path / "server.log.1").read_text() == "True\n" + "x" * 1500
    assert log.read_text() == "after\n"
    assert not LogBound(log, 1000).is_our_output()  # this process writes elsewhere


def test_every_cas_route_reads_the_first_line_only(app) -> None:
    routes = [r for r in app.routes if isinstance(r, CasRoute)]
    assert routes and all(r.access is Access.SECRET_OR_FIRST_LINE for r in routes)
    for route in routes:
        body = Body([b"wrong\n", *MIB_CHUNKS[:4]])
        assert call(app, url(route), body)[0] == 401 and body.taken == 1
