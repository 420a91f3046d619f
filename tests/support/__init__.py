"""Test helpers shared by tests/, clients/*/ and bench/: paths, MNIST, a real server process.

Import it as ``from support import ...`` (``tests/`` is on pytest's ``pythonpath``;
the benches put it on ``sys.path``). Fixtures live in the root ``conftest.py``; fake
runtimes and the in-process app in :mod:`support.fakes`.

MNIST comes from one setting, ``MLBRIDGE_MNIST`` (default ``../shared/data/mnist``
beside the repository); tests that need it skip, naming the setting, when it is absent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from mlbridge.connection import Connection, wait_for_server

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
TESTDATA = REPO / "tests" / "testdata"
TEST_MODELS = TESTDATA / "models"
MNIST_SETTING = "MLBRIDGE_MNIST"
MNIST_DIR = Path(os.environ.get(MNIST_SETTING, REPO.parent / "shared" / "data" / "mnist"))
HELD_OUT = slice(8000, 10000)  # the report set: never trained or tuned on
CLIENT_BATCH = slice(0, 20)  # of the held-out set: images 8000..8019, for the client tests
START_TIMEOUT_S = 60


def mnist_missing() -> str | None:
    """Why the MNIST tests cannot run (a skip reason naming the setting), or None."""
    if MNIST_DIR.is_dir():
        return None
    return (
        f"MNIST not found at {MNIST_DIR}; set {MNIST_SETTING} to a folder holding the "
        "t10k idx files (see README.md)"
    )


def load_held_out() -> tuple[np.ndarray, np.ndarray]:
    """Held-out images 8000..9999 as FP32 in [0, 1], and their labels."""
    from mlbridge.training.data import load_mnist_idx  # numpy only: no TensorFlow

    images, labels = load_mnist_idx(MNIST_DIR)
    return (images[HELD_OUT].astype(np.float32) / 255.0), labels[HELD_OUT].astype(np.int64)


@dataclass
class RunningServer:
    """A `mlbridge serve` child process and how to reach it."""

    process: subprocess.Popen
    home: Path
    log: Path
    connection: Connection

    @property
    def url(self) -> str:
        return self.connection.url

    @property
    def token_file(self) -> Path:
        return self.connection.token_file

    @property
    def info(self) -> dict:
        """What server.json says, as a dict (through :mod:`mlbridge.connection`)."""
        return self.connection.to_dict()

    @property
    def token(self) -> str:
        return self.connection.secret()

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


def start_server(home: Path, *args: str, env: dict[str, str] | None = None) -> RunningServer:
    """Start `mlbridge serve --port 0 ARGS` with ``home``; return once it is published."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    log = home.parent / f"{home.name}-serve.log"
    environ = {**(env or os.environ), "MLBRIDGE_HOME": str(home)}
    command = [sys.executable, "-m", "mlbridge", "serve", "--port", "0", *args]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=environ, stdout=sink, stderr=subprocess.STDOUT)
    try:
        connection = wait_for_server(home, process.pid, START_TIMEOUT_S, process.poll)
    except Exception as error:
        if process.poll() is None:
            process.kill()
            process.wait()
        raise RuntimeError(f"mlbridge serve did not start: {error}\n{log.read_text()}") from None
    return RunningServer(process, home, log, connection)


def v2_json(images: np.ndarray, name: str = "input") -> dict:
    """A V2 JSON infer request carrying ``images`` as one FP32 input."""
    tensor = {"name": name, "shape": list(images.shape), "datatype": "FP32"}
    return {"inputs": [{**tensor, "data": images.ravel().tolist()}]}


def traced_peak(function: Callable[[], T]) -> tuple[T, int]:
    """What ``function()`` returns, and the peak of memory tracemalloc saw while it ran."""
    tracemalloc.start()
    try:
        result = function()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
