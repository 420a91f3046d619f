"""Fixtures for every test (tests/ and clients/); the helpers behind them live in tests/support.

- ``app``, ``http``, ``anon``: the app in process on fake runtimes plus the demo ONNX models
  (``http`` sends the secret, ``anon`` does not); most HTTP tests use these.
- ``server``: one real `mlbridge serve` process on the demo models, on a free port, for
  what needs a real process: CLI, signals, files, golden payloads, external clients.
- ``mnist_dir``, ``mnist``: MNIST through the ``MLBRIDGE_MNIST`` setting; tests that use
  them skip, naming the setting, when the folder is absent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient
from support import (
    CLIENT_BATCH,
    MNIST_DIR,
    RunningServer,
    load_held_out,
    mnist_missing,
    start_server,
)
from support.fakes import AUTH, DEMO, fake_registry, in_process_app

from mlbridge.registry import ModelRegistry


@pytest.fixture(scope="session")
def registry() -> Iterator[ModelRegistry]:
    """The fakes (echo, echo.vjp, slow, failing) and the demo models mnist, mnist-cnn."""
    models = fake_registry(*DEMO)
    yield models
    models.close()


@pytest.fixture(scope="session")
def app(registry: ModelRegistry) -> Starlette:
    """The app serving ``registry`` in this process; its secret is support.fakes.SECRET."""
    return in_process_app(registry)


@pytest.fixture(scope="session")
def http(app: Starlette) -> Iterator[TestClient]:
    """A client of the in-process app that sends the secret."""
    with TestClient(app, headers=AUTH) as client:
        yield client


@pytest.fixture(scope="session")
def anon(app: Starlette) -> Iterator[TestClient]:
    """A client of the in-process app that sends no secret."""
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One real server on the bundled demo models, shared by the session."""
    running = start_server(tmp_path_factory.mktemp("serve") / "home")
    yield running
    running.stop()


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The MNIST folder (MLBRIDGE_MNIST); skips the test when it is absent."""
    reason = mnist_missing()
    if reason:
        pytest.skip(reason)
    return MNIST_DIR


@pytest.fixture(scope="session")
def mnist(mnist_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The held-out MNIST report set: images 8000..9999 as FP32 in [0,1], and labels."""
    return load_held_out()


# Client tests (clients/*/test_*.py)


@pytest.fixture(scope="session")
def batch(mnist: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Held-out images 8000..8019 (FP32 [20,28,28] in [0,1]) and their labels."""
    images, labels = mnist
    return images[CLIENT_BATCH], labels[CLIENT_BATCH]


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
