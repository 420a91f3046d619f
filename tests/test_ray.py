"""`mlbridge serve --ray`: a local Ray cluster on 127.0.0.1, the demo models in two replicas.

One deployment serves the module (starting a cluster takes ~15 s): held-out accuracy,
tritonclient (binary and JSON), the CAS text endpoint, gradients, 401 without the secret,
batching inside the replicas, and finally `mlbridge stop`, which must take down the
deployment and the cluster it started. Needs the ray extra; skips without it.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from support import RunningServer, v2_json

from mlbridge.connection import connection_path, wait_for_server

if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.serve") is None:
    pytest.skip("Ray Serve is not installed: pip install 'mlbridge[ray]'", allow_module_level=True)

pytestmark = pytest.mark.ray
START_TIMEOUT_S = 180
FLOORS = {"mnist": 0.93, "mnist-cnn": 0.97}
REPLICA = "ray::ServeReplica:mlbridge:MLBridge"
CLUSTER_PROCESSES = ("gcs_server", "raylet")


def descendants(pid: int) -> dict[int, str]:
    """The processes below ``pid``, by pid, with their command lines (from /proc)."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            commands[int(entry.name)] = (
                (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            )
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found[child] = commands.get(child, "")
                frontier.append(child)
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped has stopped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def listening_addresses(port: int) -> set[str]:
    """The local addresses listening on ``port`` (hex, from /proc/net/tcp{,6})."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if int(hex_port, 16) == port and state == "0A":
                found.add(address)
    return found


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """`mlbridge serve --ray --replicas 2` on a local cluster of 2 CPUs, 80 MiB object store."""
    root = tmp_path_factory.mktemp("ray")
    home = root / "home"
    home.mkdir(mode=0o700)
    log = root / "serve.log"
    environ = {
        **os.environ,
        "MLBRIDGE_HOME": str(home),
        "HOME": str(root),  # Ray writes its cluster token to ~/.ray
        "MLBRIDGE_RAY_CPUS": "2",
        "MLBRIDGE_RAY_OBJECT_STORE_MB": "80",
        "MLBRIDGE_BATCH_DELAY_US": "20000",  # 20 ms: concurrent requests surely merge
    }
    command = [sys.executable, "-m", "mlbridge", "serve", "--ray", "--replicas", "2"]
    started = time.monotonic()
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=environ, stdout=sink, stderr=subprocess.STDOUT)
    try:
        connection = wait_for_server(home, process.pid, START_TIMEOUT_S, process.poll)
    except Exception as error:
        process.kill()
        process.wait()
        output = log.read_text()
        raise RuntimeError(f"mlbridge serve --ray did not start: {error}\n{output}") from None
    print(f"deployed in {time.monotonic() - started:.1f} s")
    yield RunningServer(process, home, log, connection)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def cluster(ray_server: RunningServer) -> dict[int, str]:
    """The processes of the cluster the server started (its descendants), before the tests."""
    return descendants(ray_server.process.pid)


def test_two_replicas_behind_a_loopback_proxy_and_clients_find_it(
    ray_server: RunningServer, cluster: dict[int, str]
) -> None:
    assert sum(REPLICA in command for command in cluster.values()) == 2
    for name in CLUSTER_PROCESSES:
        assert any(name in command for command in cluster.values()), name
    port = int(ray_server.url.rsplit(":", 1)[1])
    assert ray_server.url.startswith("http://127.0.0.1:")
    assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1 only
    info = ray_server.info
    assert info["pid"] == ray_server.process.pid
    assert {"mnist", "mnist.vjp", "box_volume", "lj13"} <= set(info["models"])
    from mlbridge.client import Client

    with Client(home=ray_server.home) as client:  # discovery, proof of the secret, then use
        for _ in range(4):  # whichever replica answers speaks for the driver
            assert client.server_metadata()["pid"] == ray_server.process.pid
        assert client.predict("mnist", np.zeros((2, 28, 28), np.float32)).shape == (2, 10)


@pytest.mark.parametrize("model", sorted(FLOORS))
def test_held_out_accuracy(ray_server: RunningServer, mnist, model: str) -> None:
    images, labels = mnist
    reply = httpx.post(
        f"{ray_server.url}/v2/models/{model}/infer",
        json=v2_json(images),
        headers=ray_server.auth,
        timeout=120,
    )
    assert reply.status_code == 200, reply.text
    logits = np.asarray(reply.json()["outputs"][0]["data"], np.float32).reshape(2000, 10)
    accuracy = float(np.mean(logits.argmax(axis=1) == labels))
    assert accuracy >= FLOORS[model], f"{model}: held-out accuracy {accuracy:.4f}"


def test_tritonclient_binary_and_json(ray_server: RunningServer, mnist) -> None:
    triton = pytest.importorskip("tritonclient.http")
    images, labels = mnist[0][:200], mnist[1][:200]
    client = triton.InferenceServerClient(ray_server.url.removeprefix("http://"))
    try:
        assert client.is_model_ready("mnist-cnn", headers=dict(ray_server.auth))
        answers = []
        for binary in (True, False):
            tensor = triton.InferInput("input", list(images.shape), "FP32")
            tensor.set_data_from_numpy(images, binary_data=binary)
            wanted = triton.InferRequestedOutput("output", binary_data=binary)
            headers = dict(ray_server.auth)  # tritonclient adds to the dict it is given
            result = client.infer("mnist-cnn", [tensor], outputs=[wanted], headers=headers)
            answers.append(result.as_numpy("output"))
        assert np.array_equal(answers[0], answers[1])
        assert np.mean(answers[0].argmax(axis=1) == labels) >= FLOORS["mnist-cnn"]
        with pytest.raises(triton.InferenceServerException, match="missing secret"):
            client.get_model_metadata("mnist")
    finally:
        client.close()


def test_cas_text_endpoint_with_header_or_secret_line(ray_server: RunningServer, mnist) -> None:
    image = mnist[0][0]
    text = "{" + ", ".join("{" + ", ".join(f"{v:.6f}" for v in row) + "}" for row in image) + "}"
    by_header = httpx.post(
        f"{ray_server.url}/mnist", content=text, headers=ray_server.auth, timeout=30
    )
    by_line = httpx.post(
        f"{ray_server.url}/mnist", content=f"{ray_server.token}\n{text}", timeout=30
    )
    assert by_header.status_code == by_line.status_code == 200, by_header.text
    assert by_header.text == by_line.text and by_header.text.startswith("{")
    logits = [float(v.replace("*^", "e")) for v in by_header.text.strip("{}").split(",")]
    assert len(logits) == 10 and int(np.argmax(logits)) == int(mnist[1][0])


def test_gradients_through_the_cas_and_v2_routes(ray_server: RunningServer) -> None:
    reply = httpx.post(
        f"{ray_server.url}/box_volume/gradient",
        content="{2., 4., 8.}",
        headers=ray_server.auth,
        timeout=30,
    )
    assert reply.status_code == 200 and reply.text == "{32., 16., 8.}", reply.text
    request = {
        "inputs": [
            {"name": "sides", "shape": [1, 3], "datatype": "FP64", "data": [2.0, 4.0, 8.0]},
            {"name": "output_cotangent", "shape": [1], "datatype": "FP64", "data": [0.5]},
        ]
    }
    v2 = httpx.post(
        f"{ray_server.url}/v2/models/box_volume.vjp/infer",
        json=request,
        headers=ray_server.auth,
        timeout=30,
    )
    assert v2.json()["outputs"][0]["data"] == [16.0, 8.0, 4.0]


def test_no_secret_is_401_in_every_replica(ray_server: RunningServer) -> None:
    assert httpx.get(f"{ray_server.url}/v2/health/ready", timeout=30).json() == {"ready": True}
    for _ in range(4):
        for method, path, body in (
            ("GET", "/v2/models", None),
            ("POST", "/v2/models/mnist/infer", json.dumps(v2_json(np.zeros((1, 28, 28))))),
            ("POST", "/box_volume/gradient", "{2., 4., 8.}"),
            ("POST", "/v2/shutdown", None),
        ):
            reply = httpx.request(method, f"{ray_server.url}{path}", content=body, timeout=30)
            assert reply.status_code == 401, (path, reply.text)
            assert reply.headers["www-authenticate"].startswith("Bearer")
    wrong = httpx.get(f"{ray_server.url}/v2", headers={"Authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code == 401


def test_dynamic_batching_inside_the_replicas(ray_server: RunningServer) -> None:
    url = f"{ray_server.url}/v2/models/mnist/infer"
    body = v2_json(np.random.default_rng(3).random((1, 28, 28), dtype=np.float32))

    def one(_: int) -> int:
        return httpx.post(url, json=body, headers=ray_server.auth, timeout=60).status_code

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        assert set(pool.map(one, range(96))) == {200}
    merged = []
    for _ in range(6):  # each reply is one replica's counts
        stats = httpx.get(
            f"{ray_server.url}/v2/models/mnist/stats", headers=ray_server.auth, timeout=30
        ).json()["model_stats"][0]
        merged.append(stats["request_count"] - stats["execution_count"])
    assert max(merged) > 0, f"no requests were merged: {merged}"


def test_stop_takes_down_the_deployment_and_the_cluster(
    ray_server: RunningServer, cluster: dict[int, str]
) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "mlbridge", "stop"],
        env={**os.environ, "MLBRIDGE_HOME": str(ray_server.home)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"stopped the server (pid {ray_server.process.pid})" in done.stdout
    assert ray_server.process.wait(timeout=60) == 0, ray_server.log.read_text()[-3000:]
    print(f"stopped in {time.monotonic() - started:.1f} s")
    assert not connection_path(ray_server.home).exists()
    assert not ray_server.token_file.exists()
    deadline = time.monotonic() + 30
    alive = list(cluster)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in cluster if running(pid)]
        time.sleep(0.2)
    assert not alive, {pid: cluster[pid] for pid in alive}
