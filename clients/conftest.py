"""Fixtures for the client tests: the shared server and MNIST fixtures, and direct V2 calls."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

# tests/conftest.py only reaches tests under tests/; load it by path so that the
# client tests use the very same fixtures (a real server, the held-out MNIST set).
_SHARED = Path(__file__).resolve().parents[1] / "tests" / "conftest.py"
_spec = importlib.util.spec_from_file_location("mlbridge_shared_fixtures", _SHARED)
assert _spec is not None and _spec.loader is not None
_shared = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _shared  # dataclasses look their module up there
_spec.loader.exec_module(_shared)

# Everything public in it, not just the fixtures: under pytest's default import mode
# both files are the module `conftest`, and tests/ modules do `from conftest import ...`;
# whichever of the two was imported last must answer them.
from mlbridge_shared_fixtures import *  # noqa: E402, F403

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
