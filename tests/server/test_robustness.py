"""A real server under concurrent, oversized and hostile requests keeps serving correctly."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import httpx
import numpy as np
import pytest
from support import TESTDATA, start_server, v2_json


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    env = {**os.environ, "MLBRIDGE_MAX_BODY_MB": "1"}
    running = start_server(
        tmp_path_factory.mktemp("robust") / "home", str(TESTDATA / "models"), env=env
    )
    yield running
    running.stop()


@pytest.mark.slow  # seconds: CI runs it, the fast part does not
def test_concurrent_requests_on_a_tflite_pool_all_answer_correctly(small_server, mnist) -> None:
    images = mnist[0][:64]
    with httpx.Client(base_url=small_server.url, headers=small_server.auth) as client:
        expected = client.post(
            "/v2/models/linear/infer",
            json=v2_json(images),
        ).json()["outputs"][0]["data"]
    expected = np.asarray(expected, np.float32).reshape(64, 10)

    async def one(client: httpx.AsyncClient, index: int) -> np.ndarray:
        model = ("linear", "linear-lite")[index % 2]
        reply = await client.post(
            f"/v2/models/{model}/infer",
            json=v2_json(images[index % 64][None]),
        )
        assert reply.status_code == 200, reply.text
        return np.asarray(reply.json()["outputs"][0]["data"], np.float32)

    async def many() -> list[np.ndarray]:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(
            base_url=small_server.url, headers=small_server.auth, limits=limits, timeout=60
        ) as client:
            return await asyncio.gather(*(one(client, i) for i in range(400)))

    results = asyncio.run(many())
    for index, logits in enumerate(results):
        assert np.allclose(logits, expected[index % 64], atol=1e-5)


def test_oversized_body_is_413_and_the_server_goes_on(small_server) -> None:
    big = b"{" + b"0.," * 600_000 + b"0.}"
    reply = httpx.post(f"{small_server.url}/linear", content=big, headers=small_server.auth)
    assert reply.status_code == 413 and "exceeds the limit of 1048576 bytes" in reply.text

    def chunks():
        yield big[: len(big) // 2]
        yield big[len(big) // 2 :]

    streamed = httpx.post(
        f"{small_server.url}/v2/models/linear/infer", content=chunks(), headers=small_server.auth
    )
    assert streamed.status_code == 413
    assert httpx.get(f"{small_server.url}/v2/health/live").status_code == 200


def test_half_sent_requests_do_not_block_others(small_server) -> None:
    host, port = small_server.url.removeprefix("http://").split(":")
    stalled = []
    for _ in range(20):
        sock = socket.create_connection((host, int(port)))
        sock.sendall(b"POST /linear HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{{")
        stalled.append(sock)
    try:
        reply = httpx.get(
            f"{small_server.url}/v2/models/linear", headers=small_server.auth, timeout=5
        )
        assert reply.status_code == 200
    finally:
        for sock in stalled:
            sock.close()


def test_wrong_secret_never_appears_in_the_log(small_server) -> None:
    httpx.get(f"{small_server.url}/v2", headers={"Authorization": "Bearer guess-123"})
    log = small_server.log.read_text()
    assert small_server.token not in log and "guess-123" not in log


def test_wxf_zip_bomb_is_bounded_by_the_body_limit(small_server) -> None:
    import zlib

    bomb = b"8C:" + zlib.compress(bytes(8 * 1024 * 1024), 9)  # 8 MiB of zeros, 8 KiB sent
    assert len(bomb) < 64 * 1024
    reply = httpx.post(f"{small_server.url}/linear", content=bomb, headers=small_server.auth)
    assert reply.status_code == 400
    assert "decompresses to more than 1048576 bytes" in reply.text


@pytest.mark.slow  # several seconds against a real server
def test_a_big_text_batch_does_not_hold_up_small_requests(server, mnist) -> None:
    from mlbridge.codecs.mathematica import format_list

    big = format_list(np.concatenate([mnist[0]] * 3)).encode()  # 6000 images, ~25 MB of text

    async def race() -> tuple[float, float]:
        async with httpx.AsyncClient(base_url=server.url, headers=server.auth, timeout=120) as c:
            started = time.perf_counter()
            batch = asyncio.create_task(c.post("/mnist", content=big))
            slowest = 0.0
            while not batch.done():
                sent = time.perf_counter()
                reply = await c.post("/v2/models/mnist/infer", json=v2_json(mnist[0][:1]))
                assert reply.status_code == 200
                slowest = max(slowest, time.perf_counter() - sent)
            assert (await batch).status_code == 200
            return slowest, time.perf_counter() - started

    slowest, batch_seconds = asyncio.run(race())
    assert slowest < batch_seconds / 4, f"a small request waited {slowest:.2f} s for the batch"
