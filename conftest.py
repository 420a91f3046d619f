"""Fixtures for every test: a real `mlbridge serve` process on a free port, real MNIST data.

The only conftest.py, so that test modules anywhere (tests/, clients/) can
`from conftest import start_server, TESTDATA, ...` and get this module.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from mlbridge.training.data import load_mnist_idx

REPO = Path(__file__).resolve().parent
MNIST_DIR = Path(os.environ.get("MLBRIDGE_MNIST", REPO.parent / "shared" / "data" / "mnist"))
TESTDATA = REPO / "tests" / "testdata"
HELD_OUT = slice(8000, 10000)
START_TIMEOUT_S = 60


@dataclass
class RunningServer:
    """A `mlbridge serve` child process and how to reach it."""

    process: subprocess.Popen
    home: Path
    log: Path
    info: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.info["url"]

    @property
    def token_file(self) -> Path:
        return Path(self.info["token_file"])

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    @property
    def env(self) -> dict[str, str]:
        """Environment in which clients find this server through MLBRIDGE_HOME."""
        return {**os.environ, "MLBRIDGE_HOME": str(self.home)}

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def v2_json(images: np.ndarray, name: str = "input") -> dict:
    """A V2 JSON infer request carrying ``images`` as one FP32 input."""
    tensor = {"name": name, "shape": list(images.shape), "datatype": "FP32"}
    return {"inputs": [{**tensor, "data": images.ravel().tolist()}]}


def start_server(home: Path, *args: str, env: dict[str, str] | None = None) -> RunningServer:
    """Start `mlbridge serve` with ``home`` and wait until server.json appears."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    log = home.parent / f"{home.name}-serve.log"
    environ = {**(env or os.environ), "MLBRIDGE_HOME": str(home)}
    command = [sys.executable, "-m", "mlbridge", "serve", "--port", "0", *args]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=environ, stdout=sink, stderr=subprocess.STDOUT)
    server = RunningServer(process, home, log)
    connection = home / "server.json"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlbridge serve exited {process.returncode}:\n{log.read_text()}")
        info = json.loads(connection.read_text()) if connection.exists() else {}
        if info.get("pid") == process.pid:  # not a stale file from an earlier server
            server.info = info
            return server
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"mlbridge serve did not start in {START_TIMEOUT_S}s:\n{log.read_text()}")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One real server on the bundled demo models, shared by the session."""
    running = start_server(tmp_path_factory.mktemp("serve") / "home")
    yield running
    running.stop()


@pytest.fixture(scope="session")
def mnist() -> tuple[np.ndarray, np.ndarray]:
    """The held-out MNIST report set: images 8000..9999 as FP32 in [0,1], and labels."""
    images, labels = load_mnist_idx(MNIST_DIR)
    return (images[HELD_OUT].astype(np.float32) / 255.0), labels[HELD_OUT].astype(np.int64)


# Client tests (clients/*/test_*.py)

BATCH = slice(0, 20)  # held-out images 8000..8019


@pytest.fixture(scope="session")
def batch(mnist: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Held-out images 8000..8019 (FP32 [20,28,28] in [0,1]) and their labels."""
    images, labels = mnist
    return images[BATCH], labels[BATCH]


@pytest.fixture(scope="session")
def images_file(tmp_path_factory: pytest.TempPathFactory, batch) -> Path:
    """The batch as raw little-endian float32 in C order, [20,28,28]: any interpreter reads it."""
    path = tmp_path_factory.mktemp("clients") / "images-8000-8019.f32"
    batch[0].astype("<f4").tofile(path)
    return path


@pytest.fixture(scope="session")
def v2_infer(server) -> Callable[[str, np.ndarray], np.ndarray]:
    """Logits straight from the server's V2 endpoint, to compare a client's results with."""

    def infer(model: str, images: np.ndarray) -> np.ndarray:
        meta = httpx.get(f"{server.url}/v2/models/{model}", headers=server.auth, timeout=30)
        tensor = {
            "name": meta.json()["inputs"][0]["name"],
            "shape": list(images.shape),
            "datatype": "FP32",
            "data": images.ravel().tolist(),
        }
        reply = httpx.post(
            f"{server.url}/v2/models/{model}/infer",
            headers=server.auth,
            json={"inputs": [tensor]},
            timeout=30,
        )
        reply.raise_for_status()
        output = reply.json()["outputs"][0]
        return np.asarray(output["data"], dtype=np.float64).reshape(output["shape"])

    return infer


@pytest.fixture(scope="session")
def v2_error(server) -> Callable[..., str]:
    """The server's own error message for a request (method, path, optional JSON body)."""

    def error(method: str, path: str, body: dict | None = None) -> str:
        reply = httpx.request(
            method, f"{server.url}{path}", headers=server.auth, json=body, timeout=30
        )
        assert reply.status_code >= 400, f"{method} {path} was expected to fail"
        return reply.json()["error"]

    return error
