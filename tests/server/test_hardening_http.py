"""Hostile clients against a real server process on loopback: every refusal as it is sent.

Each request is written byte for byte on a raw socket, so what is proved is what the server
does with a socket: what it answers, how soon, and what it reads first. The two load tests
(memory under 500 MiB uploads, 300 slow connections) are marked ``slow``; run them with
``pytest -s -m slow tests/server/test_hardening_http.py`` to see their figures
(docs/reliability.md, "Hostile clients").
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import psutil
import pytest
from support import TEST_MODELS, RunningServer, start_server, v2_json

HEADER_TIMEOUT_S, BODY_TIMEOUT_S, KEEP_ALIVE_S = 1, 1, 1
LIMITS = {
    "MLBRIDGE_MAX_BODY_MB": "4",
    "MLBRIDGE_BODY_BUDGET_MB": "8",
    "MLBRIDGE_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
    "MLBRIDGE_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    "MLBRIDGE_KEEP_ALIVE_TIMEOUT_S": str(KEEP_ALIVE_S),
}
MIB = 1 << 20
HOST = b"Host: 127.0.0.1\r\n"


@dataclass
class Reply:
    """What came back on one connection: a reply (status None: closed without one)."""

    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    seconds: float = 0.0
    continued: bool = False  # "100 Continue" came first


def address(server: RunningServer) -> tuple[str, int]:
    parts = urlsplit(server.url)
    return parts.hostname or "", parts.port or 0


def read_reply(sock: socket.socket, started: float) -> Reply:
    """Read one reply (or the connection's end) from ``sock``."""
    data = b""
    while True:
        head, _, rest = data.partition(b"\r\n\r\n")
        if _ and head.startswith(b"HTTP/1.1 100 "):
            reply = read_reply_from(sock, rest, started)
            reply.continued = True
            return reply
        if _:
            return read_reply_from(sock, data, started)
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            chunk = b""
        if not chunk:
            return Reply(None, seconds=time.monotonic() - started)
        data += chunk


def read_reply_from(sock: socket.socket, data: bytes, started: float) -> Reply:
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return Reply(int(lines[0].split()[1]), headers, body, time.monotonic() - started)


def exchange(
    server: RunningServer,
    request: bytes,
    then: Callable[[socket.socket], None] | None = None,
    timeout: float = 10,
) -> Reply:
    """Send ``request`` on a new connection, run ``then``, and read what comes back."""
    with socket.create_connection(address(server), timeout=timeout) as sock:
        started = time.monotonic()
        try:
            sock.sendall(request)
            if then is not None:
                then(sock)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: its reply may still be there
        return read_reply(sock, started)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory):
    """A server on the test models with small limits and short timeouts."""
    env = {**os.environ, **LIMITS}
    running = start_server(tmp_path_factory.mktemp("hostile") / "home", str(TEST_MODELS), env=env)
    yield running
    running.stop()


def bearer(token: str) -> bytes:
    return f"Authorization: Bearer {token}\r\n".encode()


def get(path: str, headers: bytes = b"") -> Callable[[str], bytes]:
    return lambda token: f"GET {path} HTTP/1.1\r\n".encode() + HOST + headers + b"\r\n"


def post(path: str, headers: bytes, body: bytes = b"") -> Callable[[str], bytes]:
    return lambda token: (
        f"POST {path} HTTP/1.1\r\n".encode()
        + HOST
        + headers.replace(b"TOKEN", token.encode())
        + b"\r\n"
        + body.replace(b"TOKEN", token.encode())
    )


def length(size: int) -> bytes:
    return f"Content-Length: {size}\r\n".encode()


IMAGE = b'{"inputs": [{"name": "input", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}'
# (what, request, status, what the reply says): sent whole on one connection.
HOSTILE: list[tuple[str, Callable[[str], bytes], int, bytes]] = [
    (
        "Host: evil.example (DNS rebinding)",
        lambda token: b"GET /v2/health/live HTTP/1.1\r\nHost: evil.example\r\n\r\n",
        421,
        b"addressed to this machine",
    ),
    (
        "cross-origin POST with the secret",
        post("/linear", b"Origin: https://evil.example\r\n" + bearer("TOKEN") + length(4), b"{1.}"),
        403,
        b"requests from web pages are refused",
    ),
    (
        "cross-site fetch without Origin",
        get("/v2/health/live", b"Sec-Fetch-Site: cross-site\r\n"),
        403,
        b"web pages",
    ),
    (
        "WebSocket upgrade",
        get("/v2/health/live", b"Connection: Upgrade\r\nUpgrade: websocket\r\n"),
        400,
        b"protocol upgrades are not served",
    ),
    ("two Host headers", get("/v2", b"Host: evil.example\r\n"), 400, b"one Host header"),
    (
        "CONNECT",
        lambda token: b"CONNECT 127.0.0.1:22 HTTP/1.1\r\n" + HOST + b"\r\n",
        400,
        b"malformed",
    ),
    ("missing secret", get("/v2"), 401, b"missing secret"),
    ("wrong secret", get("/v2", bearer("not-it")), 401, b"wrong secret"),
    ("empty secret", get("/v2", b"Authorization: Bearer \r\n"), 401, b"wrong secret"),
    ("very long secret (8 KiB)", get("/v2", bearer("A" * 8192)), 401, b"wrong secret"),
    ("secret in the query string", lambda t: get(f"/v2?token={t}")(t), 401, b"missing secret"),
    (
        "secret on the first line of a V2 body",
        lambda token: (
            post("/v2/models/linear/infer", length(len(token) + 1 + len(IMAGE)))(token)
            + token.encode()
            + b"\n"
            + IMAGE
        ),
        401,
        b"missing secret",
    ),
    ("oversized header (20 KiB)", get("/v2", b"X-Big: " + b"a" * 20480 + b"\r\n"), 431, b"16 KiB"),
    ("oversized URL (20 KiB)", get("/v2/" + "a" * 20480), 431, b"max_header_kb"),
    ("Content-Length: abc", post("/linear", b"Content-Length: abc\r\n"), 400, b"malformed"),
    ("negative Content-Length", post("/linear", b"Content-Length: -5\r\n"), 400, b"malformed"),
    (
        "Content-Length and chunked both (smuggling)",
        post("/linear", length(4) + b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
        400,
        b"malformed",
    ),
    (
        "two different Content-Lengths",
        post("/linear", length(4) + length(5), b"{1.}"),
        400,
        b"malformed",
    ),
    (
        "TLS sent to plain HTTP",
        lambda token: b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        400,
        b"malformed",
    ),
    ("NUL in a header", get("/v2", b"X-A: a\x00b\r\n"), 400, b"malformed"),
    (
        "1 GB body announced, with the secret",
        post("/v2/models/linear/infer", bearer("TOKEN") + length(1 << 30), b"{"),
        413,
        b"exceeds the limit of 4194304 bytes",
    ),
    (
        "1 GB body announced, secret on the first line",
        post("/linear", length(1 << 30), b"TOKEN\n{"),
        413,
        b"exceeds the limit of 4194304 bytes",
    ),
    (
        "wrong first-line secret, 3 MiB announced, first line sent",
        post("/linear", length(3 * MIB), b"not-the-secret\n{1., 2."),
        401,
        b"wrong secret",
    ),
    (
        "data without a secret, chunked, first chunk sent",
        post("/linear/gradient", b"Transfer-Encoding: chunked\r\n", b"5\r\n{1., \r\n"),
        401,
        b"missing secret",
    ),
    (
        "Expect: 100-continue with a wrong secret",
        post(
            "/v2/models/linear/infer", bearer("wrong") + length(MIB) + b"Expect: 100-continue\r\n"
        ),
        401,
        b"wrong secret",
    ),
]


@pytest.mark.parametrize(
    ("what", "request_bytes", "status", "says"), HOSTILE, ids=[h[0] for h in HOSTILE]
)
def test_hostile_requests_get_the_expected_refusal(
    limited, what, request_bytes, status, says
) -> None:
    reply = exchange(limited, request_bytes(limited.token))
    assert reply.status == status, f"{what}: {reply}"
    assert says in reply.body, f"{what}: {reply.body!r}"
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert limited.token.encode() not in reply.body
    if status not in (401, 413):  # refused before any route: the connection ends with it
        assert reply.headers.get("connection") == "close"
    assert reply.seconds < 1, f"{what}: answered after {reply.seconds:.2f} s"
    assert not reply.continued


def test_the_server_is_whole_after_the_hostile_table(limited) -> None:
    """Runs after the table (file order): a good request is served, the log is clean."""
    good = httpx.post(
        f"{limited.url}/v2/models/linear/infer", content=v2_json_body(), headers=limited.auth
    )
    assert good.status_code == 200, good.text
    log = limited.log.read_text()
    assert "Traceback" not in log and limited.token not in log


def read_replies(sock: socket.socket, count: int) -> list[Reply]:
    """``count`` replies from one connection, however its reads split or join them."""
    data, replies = b"", []
    while len(replies) < count:
        head, found, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:]) if found else {}
        size = int(headers.get("content-length", "0"))
        if found and len(rest) >= size:
            replies.append(Reply(int(lines[0].split()[1]), headers, rest[:size]))
            data = rest[size:]
            continue
        chunk = sock.recv(65536)
        assert chunk, f"the connection ended after {len(replies)} replies"
        data += chunk
    return replies


def test_requests_pipelined_in_one_write_are_answered_in_order(limited) -> None:
    """Whole requests in one read: each runs at once or as a task (the lean routes, a
    refusal, Starlette's own stack), and the replies come back in the order asked."""
    body = v2_json_body()
    infer = post("/v2/models/linear/infer", bearer("TOKEN") + length(len(body)), body)
    missing = post("/v2/models/nosuch/infer", bearer("TOKEN") + length(len(body)), body)
    metadata = get("/v2/models/linear", bearer(limited.token))
    unauthorized = get("/v2/models/linear")
    batch = b"".join(r(limited.token) for r in (infer, missing, metadata, unauthorized, infer))
    with socket.create_connection(address(limited), timeout=10) as sock:
        sock.sendall(batch)
        replies = read_replies(sock, 5)
    assert [reply.status for reply in replies] == [200, 404, 200, 401, 200]
    first, last = (json.loads(replies[i].body)["outputs"][0]["data"] for i in (0, 4))
    assert len(first) == 10 and first == last
    assert json.loads(replies[2].body)["name"] == "linear"
    assert json.loads(replies[1].body)["code"] == "ModelNotFound"


def test_a_client_awaiting_100_continue_gets_it_only_for_its_first_line(limited) -> None:
    headers = length(MIB) + b"Expect: 100-continue\r\n"
    refused = exchange(limited, post("/v2/models/linear/infer", headers)(""))
    assert refused.status == 401 and not refused.continued  # no body invited before the secret

    def first_line(sock: socket.socket) -> None:
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"not-the-secret\n")

    headerless = exchange(limited, post("/linear", headers)(""), then=first_line)
    assert headerless.status == 401 and b"wrong secret" in headerless.body


def trickle(sock: socket.socket) -> None:
    """Send a byte every 0.2 s until the server answers (for at most 4 s)."""
    for _ in range(20):
        if select.select([sock], [], [], 0.2)[0]:
            return
        sock.sendall(b"a")


def test_the_read_deadlines(limited) -> None:
    """Four slow clients at once; each is cut off at its deadline, which never moves."""
    cases = {
        "idle": (b"", None),
        "headers never finished": (b"GET /v2 HTTP/1.1\r\nHost: 1", None),
        "headers trickled": (b"GET /v2 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", trickle),
        "body short of its length": (
            post("/v2/models/linear/infer", bearer("TOKEN") + length(200), IMAGE[:50])(
                limited.token
            ),
            None,
        ),
    }
    with ThreadPoolExecutor(len(cases)) as pool:
        futures = {what: pool.submit(exchange, limited, *case) for what, case in cases.items()}
        replies = {what: future.result() for what, future in futures.items()}
    assert replies["idle"].status is None  # nothing was asked: closed without a reply
    for what in ("headers never finished", "headers trickled"):
        assert replies[what].status == 408, what
        assert b"headers did not arrive within 1 s" in replies[what].body
    assert replies["body short of its length"].status == 408
    assert b"body did not arrive within 1 s" in replies["body short of its length"].body
    for what, reply in replies.items():
        assert HEADER_TIMEOUT_S - 0.1 <= reply.seconds < HEADER_TIMEOUT_S + 0.5, what
        assert reply.status is None or reply.headers["connection"] == "close"


def closed_after(sock: socket.socket, started: float) -> float:
    """Seconds from ``started`` until the server closes ``sock`` (having sent nothing)."""
    assert sock.recv(100) == b""
    return time.monotonic() - started


def test_an_idle_kept_alive_connection_is_closed_a_period_after_its_last_reply(limited) -> None:
    """Three clients: one idle after a reply; one that asks again at 0.6 s (its period
    starts again then); one that sends blank lines, which start no request."""
    live = get("/v2/health/live")(limited.token)

    def client(pause_s: float | None, blanks: bool) -> tuple[float, list[int | None]]:
        with socket.create_connection(address(limited), timeout=10) as sock:
            sock.sendall(live)
            statuses = [read_reply(sock, time.monotonic()).status]
            replied = time.monotonic()
            if pause_s is not None:
                time.sleep(pause_s)
                sock.sendall(live)
                statuses.append(read_reply(sock, time.monotonic()).status)
                replied = time.monotonic()
            if blanks:
                for _ in range(4):
                    time.sleep(0.2)
                    sock.sendall(b"\r\n")
            return closed_after(sock, replied), statuses

    with ThreadPoolExecutor(3) as pool:
        idle, again, blank = (
            pool.submit(client, pause, blanks)
            for pause, blanks in ((None, False), (0.6, False), (None, True))
        )
        replies = {"idle": idle.result(), "asked again": again.result(), "blank": blank.result()}
    assert replies["asked again"][1] == [200, 200]
    for what, (seconds, statuses) in replies.items():
        assert all(status == 200 for status in statuses), what
        assert KEEP_ALIVE_S - 0.1 <= seconds < KEEP_ALIVE_S + 0.5, what


def test_a_truncated_body_ends_quietly(limited) -> None:
    request = post("/linear", bearer("TOKEN") + length(100), b"{1., ")(limited.token)
    reply = exchange(limited, request, then=lambda sock: sock.shutdown(socket.SHUT_WR))
    assert reply.status is None  # nobody is left to answer
    assert httpx.get(f"{limited.url}/v2/health/live").status_code == 200
    assert "Traceback" not in limited.log.read_text()


def test_a_64_mib_header_is_cut_short(limited) -> None:
    started = time.monotonic()
    cpu = psutil.Process(limited.process.pid).cpu_times()

    def flood(sock: socket.socket) -> None:
        block = b"a" * MIB
        for _ in range(64):
            sock.sendall(block)

    reply = exchange(limited, b"GET /v2 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ", then=flood)
    assert reply.status == 431 and b"16 KiB" in reply.body
    spent = psutil.Process(limited.process.pid).cpu_times()
    assert (spent.user + spent.system) - (cpu.user + cpu.system) < 0.5
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("secret", ["header", "wrong first line"])
def test_a_flood_of_trailer_fields_is_cut_short(limited, secret: str) -> None:
    if secret == "header":
        request = post("/linear", bearer(limited.token) + b"Transfer-Encoding: chunked\r\n")
        first = b"2\r\n{1\r\n"
    else:
        request = post("/linear", b"Transfer-Encoding: chunked\r\n")
        first = b"6\r\nwrong\n\r\n"

    def flood(sock: socket.socket) -> None:
        sock.sendall(first + b"0\r\nX-Trailer: ")
        for _ in range(64):  # 4 MiB of one trailer field, in 64 KiB writes
            time.sleep(0.002)
            sock.sendall(b"a" * 65536)

    started = time.monotonic()
    reply = exchange(limited, request(limited.token), then=flood)
    if secret == "header":  # refused while the body was read
        assert reply.status == 431 and b"16 KiB" in reply.body
    else:  # answered at the first line; then closed, the trailer never parsed whole
        assert reply.status == 401
    assert time.monotonic() - started < 2
    assert httpx.get(f"{limited.url}/v2/health/live").status_code == 200


def test_bodies_past_the_budget_are_refused_before_they_are_read(limited) -> None:
    image = v2_json_body()
    holders = []
    for _ in range(2):  # two bodies of 3.5 MiB in flight: 7 of the 8 MiB budget
        sock = socket.create_connection(address(limited))
        request = post("/linear", bearer(limited.token) + length(4 * MIB))(limited.token)
        sock.sendall(request + b"{" + b"0., " * (7 * MIB // 8))
        holders.append(sock)
    try:
        time.sleep(0.5)
        headers = bearer(limited.token) + length(4 * MIB)
        busy = exchange(limited, post("/linear", headers)(limited.token))
        assert busy.status == 503 and busy.headers["retry-after"] == "1"
        assert busy.body.startswith(b'Failure["MLBridge"') and b"body_budget_mb" in busy.body
        small = httpx.post(
            f"{limited.url}/v2/models/linear/infer", content=image, headers=limited.auth
        )
        assert small.status_code == 200, small.text  # a small body still fits
    finally:
        for sock in holders:
            sock.close()
    time.sleep(0.3)
    expecting = bearer(limited.token) + length(4 * MIB) + b"Expect: 100-continue\r\n"
    with socket.create_connection(address(limited), timeout=5) as sock:
        sock.sendall(post("/linear", expecting)(limited.token))
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"  # admitted: budget given back


def v2_json_body() -> bytes:
    """A good V2 request for the test model ``linear``: one 28 x 28 image."""
    return json.dumps(v2_json(np.full((1, 28, 28), 0.5, np.float32))).encode()


def test_connections_past_the_limit_get_503(tmp_path: Path) -> None:
    env = {**os.environ, "MLBRIDGE_MAX_CONNECTIONS": "8"}
    server = start_server(tmp_path / "home", str(TEST_MODELS / "linear.onnx"), env=env)
    idle = [socket.create_connection(address(server)) for _ in range(8)]
    try:
        time.sleep(0.3)
        reply = exchange(server, get("/v2/health/live")(""))
        assert reply.status == 503 and reply.headers["retry-after"] == "1"
        assert b"max_connections" in reply.body
        idle.pop().close()
        time.sleep(0.3)
        assert exchange(server, get("/v2/health/live")("")).status == 200
    finally:
        for sock in idle:
            sock.close()
        server.stop()


def test_two_servers_cannot_race_for_one_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    env = {**os.environ, "MLBRIDGE_HOME": str(home)}
    command = [sys.executable, "-m", "mlbridge", "serve", str(TEST_MODELS / "linear.onnx")]
    racers = [
        subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    try:
        deadline = time.monotonic() + 60
        while all(r.poll() is None for r in racers) and time.monotonic() < deadline:
            time.sleep(0.05)
        lost = next(r for r in racers if r.poll() is not None)
        won = next(r for r in racers if r is not lost)
        assert lost.returncode == 1 and lost.stderr is not None
        assert "already running" in lost.stderr.read()
        assert won.poll() is None
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.terminate()
            racer.wait(timeout=30)
            if racer.stderr:
                racer.stderr.close()


def test_detach_refuses_a_log_planted_as_a_link(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "server.log").symlink_to(tmp_path / "target")
    env = {**os.environ, "MLBRIDGE_HOME": str(home)}
    command = [sys.executable, "-m", "mlbridge", "serve", "--detach", str(TEST_MODELS)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "not a regular file" in done.stderr
    assert not (tmp_path / "target").exists() and not (home / "server.json").exists()


# Load: memory under unauthenticated uploads, and slow connections


class Uploader(threading.Thread):
    """Streams ``size`` bytes as fast as loopback takes them; keeps the reply."""

    def __init__(self, server: RunningServer, head: bytes, size: int, chunked: bool) -> None:
        super().__init__(daemon=True)
        self.server, self.head, self.size, self.chunked = server, head, size, chunked
        self.reply: Reply | None = None
        self.sent = 0

    def run(self) -> None:
        block = b"0" * MIB
        framed = b"%x\r\n" % len(block) + block + b"\r\n" if self.chunked else block

        def stream(sock: socket.socket) -> None:
            while self.sent < self.size:
                sock.sendall(framed)
                self.sent += len(block)
            if self.chunked:
                sock.sendall(b"0\r\n\r\n")

        self.reply = exchange(self.server, self.head, then=stream, timeout=120)


def rss(server: RunningServer) -> int:
    return psutil.Process(server.process.pid).memory_info().rss


@pytest.mark.slow
def test_unauthenticated_uploads_cost_no_memory(tmp_path: Path) -> None:
    env = {**os.environ, "MLBRIDGE_MAX_BODY_MB": "1024", "MLBRIDGE_BODY_BUDGET_MB": "1024"}
    server = start_server(tmp_path / "home", str(TEST_MODELS), env=env)
    size = 500 * MIB
    chunked = b"Transfer-Encoding: chunked\r\n"
    heads = [  # only the secret stands between these and the server's memory
        (post("/linear", length(size + 15))("") + b"not-the-secret\n", False),
        (post("/linear/gradient", chunked)("") + b"f\r\nnot-the-secret\n\r\n", True),
        (post("/v2/models/linear/infer", bearer("wrong") + length(size))(""), False),
        (post("/linear/jacobian", bearer("wrong") + chunked)(""), True),
    ] * 2
    try:
        idle = rss(server)
        uploads = [Uploader(server, head, size, is_chunked) for head, is_chunked in heads]
        peak, served, started = idle, 0, time.monotonic()
        for upload in uploads:
            upload.start()
        while any(upload.is_alive() for upload in uploads):
            peak = max(peak, rss(server))
            live = httpx.get(f"{server.url}/v2/health/live", timeout=10)
            served += live.status_code == 200
            time.sleep(0.02)
        statuses = sorted(upload.reply.status for upload in uploads if upload.reply)
        print(
            f"\n8 x 500 MiB unauthenticated uploads: replies {statuses}; RSS idle "
            f"{idle / MIB:.1f} MiB, peak {peak / MIB:.1f} MiB (+{(peak - idle) / MIB:.1f}); "
            f"{served} health checks answered meanwhile; "
            f"{sum(u.sent for u in uploads) / MIB:.0f} MiB sent in "
            f"{time.monotonic() - started:.1f} s"
        )
        assert statuses == [401] * 8
        assert peak - idle < 100 * MIB
    finally:
        server.stop()


@pytest.mark.slow
def test_300_slow_connections_are_closed_while_good_requests_are_answered(tmp_path: Path) -> None:
    env = {**os.environ, "MLBRIDGE_HEADER_TIMEOUT_S": "2", "MLBRIDGE_BODY_TIMEOUT_S": "3"}
    server = start_server(tmp_path / "home", str(TEST_MODELS), env=env)
    body_head = post("/v2/models/linear/infer", bearer(server.token) + length(1000))(server.token)
    kinds = {
        "idle": b"",
        "slow headers": b"GET /v2 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",
        "slow body": body_head,
    }
    good = GoodRequests(server)
    try:
        start_rss = rss(server)
        good.start()
        sockets = {
            kind: [socket.create_connection(address(server)) for _ in range(100)] for kind in kinds
        }
        for kind, socks in sockets.items():
            for sock in socks:
                sock.sendall(kinds[kind])
        ended = trickle_until_closed(sockets, limit_s=10)
        good.stop.set()
        good.join()
        end_rss = rss(server)
        print(
            f"\n300 slow connections: closed after {ended['seconds']:.1f} s; replies "
            f"{ended['replies']}; {good.served} good requests answered meanwhile, "
            f"{good.failed} failed, slowest {good.slowest * 1e3:.0f} ms; RSS "
            f"{start_rss / MIB:.1f} -> {end_rss / MIB:.1f} MiB"
        )
        assert ended["open"] == 0
        assert ended["replies"] == {
            "idle": {None: 100},
            "slow headers": {408: 100},
            "slow body": {408: 100},
        }
        assert good.failed == 0 and good.served > 20 and good.slowest < 1
    finally:
        good.stop.set()
        server.stop()


class GoodRequests(threading.Thread):
    """A well-behaved client: one inference every 50 ms, each on a new connection."""

    def __init__(self, server: RunningServer) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.stop = threading.Event()
        self.served = self.failed = 0
        self.slowest = 0.0

    def run(self) -> None:
        body = v2_json_body()
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                reply = httpx.post(
                    f"{self.server.url}/v2/models/linear/infer",
                    content=body,
                    headers=self.server.auth,
                    timeout=5,
                )
                ok = reply.status_code == 200
            except httpx.HTTPError:
                ok = False
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.served += ok
            self.failed += not ok
            self.stop.wait(0.05)


def trickle_until_closed(sockets: dict[str, list[socket.socket]], limit_s: float) -> dict:
    """Send a byte every 0.5 s on the slow connections until the server has closed them all."""
    started = time.monotonic()
    replies: dict[str, dict[int | None, int]] = {kind: {} for kind in sockets}
    open_ = {(kind, sock) for kind, socks in sockets.items() for sock in socks}
    for _, sock in open_:
        sock.setblocking(False)
    while open_ and time.monotonic() - started < limit_s:
        time.sleep(0.5)
        for kind, sock in list(open_):
            status = poll(sock, trickle=kind != "idle")
            if status != "open":
                replies[kind][status] = replies[kind].get(status, 0) + 1
                open_.discard((kind, sock))
                sock.close()
    for _, sock in open_:
        sock.close()
    return {"open": len(open_), "replies": replies, "seconds": time.monotonic() - started}


def poll(sock: socket.socket, trickle: bool) -> int | str | None:
    """The reply status once the server closed ``sock`` (None: no reply), or "open"."""
    try:
        data = sock.recv(65536)
    except BlockingIOError:
        if trickle:
            try:
                sock.send(b"a")
            except OSError:
                return None
        return "open"
    except OSError:
        return None
    if not data:
        return None
    sock.setblocking(True)
    sock.settimeout(2)
    reply = read_reply_from(sock, data, time.monotonic())
    return reply.status
