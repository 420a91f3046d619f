"""Operations: metrics that count exactly, hot reload under load, graceful stop, a soak run.

Reload, stop and soak run against real server processes on loopback; the metrics test runs
in process. The soak test's length is ``MLBRIDGE_SOAK_S`` (default 60 s); it and the reload
test are marked ``slow`` so the fast part can leave them out.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient
from support import TEST_MODELS, RunningServer, start_server
from support.fakes import SECRET, fake_registry, in_process_app

from mlbridge.registry import DEMO_MODELS

SOAK_S = float(os.environ.get("MLBRIDGE_SOAK_S", "60"))
IMAGE = json.dumps(np.full((28, 28), 0.5).tolist()).encode()


def metric_samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a Prometheus exposition, keyed by (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_exactly_what_was_served() -> None:
    app = in_process_app(fake_registry())
    with TestClient(app, headers={"Authorization": f"Bearer {SECRET}"}) as client:
        for _ in range(3):
            assert client.post("/echo", content=b"{1., 2., 3.}").status_code == 200
        for _ in range(2):
            assert client.post("/echo", content=b"{1., 2.}").status_code == 400
        assert client.post("/nope", content=b"{1.}").status_code == 404
        assert client.get("/v2", headers={"Authorization": "Bearer wrong"}).status_code == 401
        text = client.get("/metrics").text
    samples = metric_samples(text)

    def requests(route: str, model: str, code: str) -> float:
        labels = (("code", code), ("model", model), ("route", route))
        return samples.get(("mlbridge_requests_total", labels), 0.0)

    assert requests("/{name}", "echo", "200") == 3
    assert requests("/{name}", "echo", "400") == 2
    assert requests("/{name}", "-", "404") == 1  # an unknown name never becomes a label
    assert requests("/v2", "-", "401") == 1
    count = (("model", "echo"), ("route", "/{name}"))
    assert samples[("mlbridge_request_duration_seconds_count", count)] == 5
    assert text.count('model="nope"') == 0


def test_metrics_need_the_secret() -> None:
    with TestClient(in_process_app(fake_registry())) as anonymous:
        assert anonymous.get("/metrics").status_code == 401


class Querier(threading.Thread):
    """One keep-alive client posting the same image until stopped; records every answer."""

    def __init__(self, server: RunningServer, path: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        parts = urlsplit(server.url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        self.headers = server.auth
        self.path, self.stop = path, stop
        self.answers: list[tuple[float, int, bytes]] = []
        self.latencies: list[float] = []

    def run(self) -> None:
        while not self.stop.is_set():
            start = time.perf_counter()
            try:
                self.connection.request("POST", self.path, IMAGE, self.headers)
                reply = self.connection.getresponse()
                self.answers.append((time.monotonic(), reply.status, reply.read()))
            except OSError as error:
                self.answers.append((time.monotonic(), 0, str(error).encode()))
                self.connection.close()
            self.latencies.append(time.perf_counter() - start)
        self.connection.close()


def replace_atomically(source: Path, target: Path) -> None:
    temporary = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, temporary)
    os.replace(temporary, target)


@pytest.mark.slow
def test_a_model_replaced_20_times_under_load_never_fails_a_request(tmp_path: Path) -> None:
    versions = [TEST_MODELS / "linear.onnx", DEMO_MODELS / "mnist.onnx"]
    models = tmp_path / "models"
    models.mkdir()
    shutil.copyfile(versions[0], models / "digits.onnx")
    server = start_server(tmp_path / "home", str(models), "--watch")
    try:
        answers = [answer_of(server, version, models) for version in reversed(versions)]
        assert not np.allclose(*answers), "the two versions must answer differently"
        stop = threading.Event()
        clients = [Querier(server, "/digits", stop) for _ in range(8)]
        for client in clients:
            client.start()
        latencies = []
        for swap in range(20):
            new = versions[(swap + 1) % 2]
            replace_atomically(new, models / "digits.onnx")
            swapped = time.monotonic()
            expected = expected_output(new)
            latencies.append(wait_until_answers(clients, expected, swapped) - swapped)
        stop.set()
        for client in clients:
            client.join(timeout=30)
    finally:
        server.stop()
    replies = [answer for client in clients for answer in client.answers]
    assert all(status == 200 for _, status, _ in replies), {s for _, s, _ in replies}
    for _, _, body in replies:  # the old model's answer or the new one's, never a mix
        assert sum(np.allclose(json.loads(body), a, atol=1e-5) for a in answers) == 1, body
    assert max(latencies) < 1.0, latencies
    print(f"reload: {len(replies)} requests, 0 failed; swap latency max {max(latencies):.3f} s")


def answer_of(server: RunningServer, version: Path, models: Path) -> np.ndarray:
    """Serve ``version`` (replacing the file) and return its answer for IMAGE once it serves."""
    replace_atomically(version, models / "digits.onnx")
    expected = expected_output(version)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if np.allclose(json.loads(post(server, "/digits")), expected, atol=1e-5):
            return expected
        time.sleep(0.05)
    raise AssertionError(f"{version.name} did not start serving within 10 s")


def expected_output(version: Path) -> np.ndarray:
    """What ``version`` answers for IMAGE, computed by loading it alone."""
    from mlbridge.registry import ModelSource, load_model

    model = load_model(ModelSource("digits", version))[0]
    image = np.full((1, 28, 28), 0.5, np.float32)
    return model.runtime.predict({"input": image})["output"][0]


def wait_until_answers(clients: list[Querier], expected: np.ndarray, since: float) -> float:
    """When the first answer close to ``expected`` arrived after ``since`` (waits up to 5 s)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        times = [
            t
            for client in clients
            for t, status, body in list(client.answers)
            if t > since and status == 200 and np.allclose(json.loads(body), expected, atol=1e-5)
        ]
        if times:
            return min(times)
        time.sleep(0.01)
    raise AssertionError("the new model did not answer within 5 s")


def post(server: RunningServer, path: str, body: bytes = IMAGE) -> bytes:
    import httpx

    return httpx.post(server.url + path, content=body, headers=server.auth, timeout=30).content


def test_a_corrupt_replacement_leaves_the_old_model_serving(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copyfile(TEST_MODELS / "linear.onnx", models / "digits.onnx")
    server = start_server(tmp_path / "home", str(models))
    try:
        before = post(server, "/digits")
        (models / "digits.onnx").write_bytes(b"not a model")
        import httpx

        reload = httpx.post(
            f"{server.url}/v2/repository/models/digits/load", headers=server.auth, timeout=30
        )
        assert reload.status_code == 422 and reload.json()["code"] == "ReloadFailed"
        assert post(server, "/digits") == before
        ready = httpx.get(f"{server.url}/v2/models/digits/ready", headers=server.auth).json()
        assert ready["ready"] is True and "Protobuf" in ready["reload_error"]
    finally:
        server.stop()


@pytest.mark.slow  # several seconds against a real server
def test_sigterm_lets_requests_in_flight_finish_then_removes_the_files(tmp_path: Path) -> None:
    import httpx

    server = start_server(tmp_path / "home", str(DEMO_MODELS / "mnist-cnn.onnx"))
    images = np.random.default_rng(0).random((4000, 28, 28)).astype(np.float32)
    body = json.dumps(images.tolist()).encode()
    result: dict[str, httpx.Response] = {}

    def big_request() -> None:
        result["reply"] = httpx.post(
            server.url + "/mnist-cnn", content=body, headers=server.auth, timeout=120
        )

    worker = threading.Thread(target=big_request)
    worker.start()
    time.sleep(0.5)  # the body is in; the model runs
    server.process.send_signal(signal.SIGTERM)
    worker.join(timeout=120)
    assert server.process.wait(timeout=60) == 0 or server.process.returncode == -signal.SIGTERM
    assert result["reply"].status_code == 200
    assert len(result["reply"].json()) == 4000
    assert not (server.home / "server.json").exists() and not server.token_file.exists()


def test_a_client_gone_mid_body_leaves_no_traceback(tmp_path: Path) -> None:
    import socket

    server = start_server(tmp_path / "home", str(TEST_MODELS / "linear.onnx"))
    try:
        parts = urlsplit(server.url)
        with socket.create_connection((parts.hostname, parts.port)) as raw:
            head = "POST /linear HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
            raw.sendall((head + f"Authorization: Bearer {server.token}\r\n\r\n{{0.5").encode())
        time.sleep(0.3)
        assert post(server, "/linear").startswith(b"[")
    finally:
        server.stop()
    assert "Traceback" not in server.log.read_text()


@pytest.mark.slow
def test_soak_eight_clients_no_failures_and_flat_memory(tmp_path: Path) -> None:
    server = start_server(tmp_path / "home")
    stop = threading.Event()
    clients = [Querier(server, "/mnist-cnn" if i % 2 else "/mnist", stop) for i in range(8)]
    rss: list[tuple[float, int]] = []
    try:
        start = time.monotonic()
        for client in clients:
            client.start()
        while time.monotonic() - start < SOAK_S:
            rss.append((time.monotonic() - start, rss_bytes(server.process.pid)))
            time.sleep(0.5)
        stop.set()
        for client in clients:
            client.join(timeout=30)
    finally:
        server.stop()
    replies = [answer for client in clients for answer in client.answers]
    latencies = sorted(t for client in clients for t in client.latencies)
    failed = [status for _, status, _ in replies if status != 200]
    window = min(10.0, SOAK_S / 6)
    first = np.median([r for t, r in rss if t <= window])
    last = np.median([r for t, r in rss if t >= SOAK_S - window])
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    print(
        f"soak {SOAK_S:.0f} s: {len(replies)} requests, {len(failed)} failed, "
        f"p99 {p99 * 1e3:.2f} ms, RSS {first / 2**20:.1f} -> {last / 2**20:.1f} MiB"
    )
    assert not failed
    assert last <= 1.10 * first


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")
