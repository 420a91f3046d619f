"""Start, watch and stop the servers under test, each a process tree on loopback.

Every server is started with the CPUs :data:`SERVER_CPUS` (``taskset``-style, through
``sched_setaffinity`` before ``exec``, so worker processes it forks inherit them) and timed
from ``exec`` to its first ``200`` on ``GET /v2/health/ready`` (mlbridge: and its
connection file, which a client needs). Server CPU time and RSS are read from /proc through
psutil, summed over the process tree (MLServer's parallel workers are child processes).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

from mlbridge.connection import find_connection
from mlbridge.registry import DEMO_MODELS

from . import loadgen, mlserver_onnx
from .loadgen import Connection, request_bytes

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
READY_PATH = "/v2/health/ready"
START_TIMEOUT_S = 120
POLL_S = 0.005
SERVER_CPUS: set[int] | None = None  # set by pin(); None: no pinning
SNAPSHOT: Path | None = None  # a copy of mlbridge/ that every mlbridge server of a run imports


def snapshot_mlbridge(folder: Path) -> Path:
    """Copy mlbridge/ so that the whole run serves one version of it, however the tree changes."""
    global SNAPSHOT
    SNAPSHOT = folder / "snapshot"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "mlbridge", SNAPSHOT / "mlbridge", ignore=ignore)
    return SNAPSHOT


def snapshot_digest() -> str:
    """A short digest of the snapshot's Python files: which code a run measured."""
    assert SNAPSHOT is not None
    digest = hashlib.sha256()
    for path in sorted((SNAPSHOT / "mlbridge").rglob("*.py")):
        digest.update(path.relative_to(SNAPSHOT).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def mlbridge_env() -> tuple[dict[str, str], Path]:
    """Environment and working folder in which ``python -m mlbridge`` imports the snapshot."""
    if SNAPSHOT is None:
        return {}, REPO
    return {"PYTHONPATH": str(SNAPSHOT)}, SNAPSHOT


def pin(client_cpus: set[int] | None, server_cpus: set[int] | None) -> None:
    """Pin this process (the client) and every server started later."""
    global SERVER_CPUS
    SERVER_CPUS = server_cpus
    if client_cpus:
        os.sched_setaffinity(0, client_cpus)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    """A running server: how to reach it and what it costs."""

    name: str
    process: subprocess.Popen
    port: int
    log: Path
    token: str = ""
    start_s: float = 0.0
    home: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def tree(self) -> list[psutil.Process]:
        root = psutil.Process(self.process.pid)
        return [root, *root.children(recursive=True)]

    def cpu_s(self) -> float:
        """User + system CPU seconds of the whole process tree so far."""
        total = 0.0
        for process in self.tree():
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def sequential_cost(self, raws: list[bytes], count: int, warm_up: int) -> tuple[float, float]:
        """p50 µs and server CPU µs per request of ``count`` requests sent one after another
        on one keep-alive connection, after ``warm_up`` unmeasured ones."""
        loadgen.sequential(self.port, raws, warm_up)
        cpu = self.cpu_s()
        times = loadgen.sequential(self.port, raws, count)
        return float(np.median(times)) * 1e6, (self.cpu_s() - cpu) / count * 1e6

    def rss_mb(self) -> float:
        """Resident memory of the whole process tree, in MB (10^6 bytes)."""
        total = 0
        for process in self.tree():
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total / 1e6

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                for process in reversed(self.tree()):
                    process.kill()
                self.process.wait(timeout=10)


def _affinity() -> None:
    if SERVER_CPUS:
        os.sched_setaffinity(0, SERVER_CPUS)


def launch(
    name: str,
    command: list[str],
    port: int,
    folder: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    ready=None,
) -> Server:
    """Start ``command``; return once it answers (and ``ready()`` holds, if given)."""
    log = folder / f"{name}.log"
    with log.open("wb") as sink:
        start = time.perf_counter()
        process = subprocess.Popen(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            preexec_fn=_affinity,
        )
    server = Server(name, process, port, log)
    deadline = start + START_TIMEOUT_S
    while not (_answers(port) and (ready is None or ready())):
        if process.poll() is not None or time.perf_counter() > deadline:
            server.stop()
            raise RuntimeError(f"{name} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(POLL_S)
    server.start_s = time.perf_counter() - start
    return server


def _answers(port: int) -> bool:
    """Whether the port answers an HTTP request (any status: the original design says 501)."""
    try:
        connection = Connection(port, timeout_s=5)
    except OSError:
        return False
    try:
        reply = connection.send(request_bytes("GET", READY_PATH))
        return reply.status == 200 or reply.status == 501
    except OSError:
        return False
    finally:
        connection.close()


def python() -> str:
    return sys.executable


def start_echo(kind: str, folder: Path) -> Server:
    """A floor: ``asgi`` (raw ASGI echo on uvicorn) or ``asyncio`` (asyncio echo)."""
    port = free_port()
    return launch(
        f"echo-{kind}", [python(), "-m", "bench.echo", kind, str(port)], port, folder, cwd=REPO
    )


def start_original(folder: Path, model: Path) -> Server:
    """The original design, on ``model`` (.tflite, else .onnx)."""
    port = free_port()
    token = secrets.token_urlsafe(32)
    token_file = folder / "original-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    command = [python(), str(HERE / "original_design.py"), str(model), str(port), str(token_file)]
    server = launch("original", command, port, folder)
    server.token = token  # sent on the body's first line, as the sketch wanted
    return server


def start_mlserver(folder: Path, parallel_workers: bool) -> Server:
    """MLServer 1.7 with the onnxruntime runtime; its defaults, or parallel workers off."""
    name = "mlserver-default" if parallel_workers else "mlserver-pw0"
    port = free_port()
    ports = {"http": port, "grpc": free_port(), "metrics": free_port()}
    models = {"mnist": DEMO_MODELS / "mnist.onnx", "mnist-cnn": DEMO_MODELS / "mnist-cnn.onnx"}
    repository = mlserver_onnx.write_repository(folder / name, models, ports, parallel_workers)
    command = [str(mlserver_onnx.ensure_mlserver()), "start", str(repository)]
    env = {"PYTHONPATH": str(repository)}
    return launch(name, command, port, folder, env=env, cwd=repository)


def start_mlbridge(folder: Path, *flags: str) -> Server:
    """`mlbridge serve` with the demo models, its defaults unless ``flags`` say otherwise."""
    home = folder / "mlbridge-home"
    home.mkdir(mode=0o700, exist_ok=True)
    port = free_port()
    command = [python(), "-m", "mlbridge", "serve", "--port", str(port), *flags]

    def published() -> bool:
        return find_connection(home) is not None

    env, cwd = mlbridge_env()
    env["MLBRIDGE_HOME"] = str(home)
    server = launch("mlbridge", command, port, folder, env=env, cwd=cwd, ready=published)
    connection = find_connection(home)
    assert connection is not None
    server.token = connection.secret()
    server.home = home
    return server
