"""The `mlbridge` command as a user runs it: real processes, real files, real sockets."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import TESTDATA, start_server

from mlbridge.auth import write_private
from mlbridge.connection import wait_for_server

MODELS = TESTDATA / "models"


def mlbridge(
    *args: str,
    env: dict[str, str],
    stdin: str | None = None,
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlbridge", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def listeners(port: int) -> list[str]:
    """Local addresses listening on ``port``, read from /proc/net/tcp{,6}."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if int(hex_port, 16) == port and state == "0A":
                found.append(address)
    return found


def test_files_are_private_loopback_only_and_removed_by_stop(tmp_path: Path) -> None:
    server = start_server(tmp_path / "home", str(MODELS / "linear.onnx"))
    files = [server.home / "server.json", server.token_file]
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    port = int(server.url.rsplit(":", 1)[1])
    assert listeners(port) == ["0100007F"]  # 127.0.0.1, and nothing else
    assert server.info["pid"] == server.process.pid
    assert server.info["models"] == ["linear", "linear.vjp"]  # the model and its gradient
    stopped = mlbridge("stop", env=server.env)
    assert stopped.returncode == 0, stopped.stderr
    server.process.wait(timeout=10)
    assert not any(f.exists() for f in files)


def test_token_file_option_moves_the_secret(tmp_path: Path) -> None:
    token_file = tmp_path / "elsewhere" / ".ml_server_token"
    server = start_server(
        tmp_path / "home", str(MODELS / "linear.onnx"), "--token-file", str(token_file)
    )
    try:
        assert server.token_file == token_file
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert not (server.home / "token").exists()
        assert "linear" in mlbridge("status", env=server.env).stdout
    finally:
        server.stop()
    assert not token_file.exists()


def test_predict_models_and_status_commands(tmp_path: Path, mnist) -> None:
    server = start_server(tmp_path / "home")
    try:
        images, labels = mnist
        np.save(tmp_path / "images.npy", images[:20])
        done = mlbridge(
            "predict", "mnist", str(tmp_path / "images.npy"), "--argmax", env=server.env
        )
        assert done.returncode == 0, done.stderr
        assert np.mean(np.array(json.loads(done.stdout)) == labels[:20]) >= 0.9
        piped = mlbridge("predict", "mnist", env=server.env, stdin=json.dumps(images[0].tolist()))
        assert len(json.loads(piped.stdout)) == 10
        listing = mlbridge("models", env=server.env).stdout
        assert "mnist  (onnx)  input [-1, 28, 28] FP32 -> output [-1, 10] FP32" in listing
        assert "mnist-cnn" in mlbridge("status", env=server.env).stdout
        wrong = mlbridge("predict", "mnist", env=server.env, stdin="[[1, 2]]")
        assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
        assert "expects input 'input' of shape [-1, 28, 28]" in wrong.stderr
    finally:
        server.stop()


def test_tflite_model_served_like_onnx(tmp_path: Path, mnist) -> None:
    server = start_server(tmp_path / "home", str(MODELS))
    try:
        from mlbridge.client import Client

        with Client(home=server.home) as client:
            assert client.models() == ["linear", "linear-lite", "linear.vjp", "twoin", "twoin.vjp"]
            images = mnist[0][:16]
            onnx, lite = client.predict("linear", images), client.predict("linear-lite", images)
            assert np.allclose(onnx, lite, atol=1e-5)
            summed = client.predict(
                "twoin", {"a": np.ones((2, 3), np.float32), "b": np.full((2, 3), 2, np.float32)}
            )
            assert summed["sum"].tolist() == [[3.0] * 3] * 2
    finally:
        server.stop()


@pytest.mark.slow  # seconds: CI runs it, the fast part does not
def test_a_broken_model_is_reported_and_the_others_load(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    repository.mkdir()
    (repository / "broken.onnx").write_bytes(b"not a model")
    (repository / "linear.onnx").write_bytes((MODELS / "linear.onnx").read_bytes())
    server = start_server(tmp_path / "home", str(repository))
    try:
        assert server.info["models"] == ["linear", "linear.vjp"]
    finally:
        server.stop()
    assert "could not load" in server.log.read_text() and "broken.onnx" in server.log.read_text()
    env = {**os.environ, "MLBRIDGE_HOME": str(tmp_path / "strict")}
    strict = mlbridge("serve", "--strict", str(repository), env=env)
    assert strict.returncode == 1 and "broken.onnx" in strict.stderr
    assert "Traceback" not in strict.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "0.0.0.0"], "give --tls-cert CERT.pem and --tls-key KEY.pem"),
        (["--host", "example.org"], "is not an IP address"),
        (["no/such/model.onnx"], "no/such/model.onnx: no such file or folder"),
    ],
)
def test_serve_refuses_with_one_clear_line(tmp_path: Path, args, message) -> None:
    env = {**os.environ, "MLBRIDGE_HOME": str(tmp_path / "home")}
    done = mlbridge("serve", *args, env=env)
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow  # seconds: CI runs it, the fast part does not
def test_busy_port_and_second_server_are_refused(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "MLBRIDGE_HOME": str(tmp_path / "a")}
        done = mlbridge("serve", "--port", str(port), str(MODELS / "linear.onnx"), env=env)
    assert done.returncode == 1 and f"port {port} on 127.0.0.1 is already in use" in done.stderr
    server = start_server(tmp_path / "b", str(MODELS / "linear.onnx"))
    try:
        again = mlbridge("serve", str(MODELS / "linear.onnx"), env=server.env)
        assert again.returncode == 1 and "already running" in again.stderr
        assert server.info == json.loads((server.home / "server.json").read_text())
    finally:
        server.stop()


def test_commands_without_a_server_say_how_to_start_one(tmp_path: Path) -> None:
    env = {**os.environ, "MLBRIDGE_HOME": str(tmp_path / "none")}
    done = mlbridge("status", env=env)
    assert done.returncode == 1 and "start one with 'mlbridge serve'" in done.stderr


def test_serving_the_demo_models_never_imports_tensorflow(tmp_path: Path) -> None:
    report = tmp_path / "modules.json"
    probe = (
        "import atexit, json, sys\n"
        "def report():\n"
        f"    open({str(report)!r}, 'w').write(json.dumps(sorted(sys.modules)))\n"
        "atexit.register(report)\n"
        "from mlbridge.cli import main\n"
        "main(['serve', '--port', '0'])\n"
    )
    home = tmp_path / "home"
    env = {**os.environ, "MLBRIDGE_HOME": str(home)}
    process = subprocess.Popen(
        [sys.executable, "-c", probe], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_server(home, process.pid, 60, process.poll)
        assert "mnist-cnn" in mlbridge("models", env=env).stdout
    finally:
        process.send_signal(signal.SIGINT)  # SIGINT lets atexit run; SIGTERM would not
        process.wait(timeout=30)
    modules = json.loads(report.read_text())
    assert "onnxruntime" in modules and "mlbridge.server.app" in modules
    assert not [m for m in modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras")]


def test_a_stale_connection_file_is_replaced(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    # pid 1 is alive, but nothing answers at the URL: a crashed server's leftover
    write_private(home / "server.json", json.dumps({"pid": 1, "url": dead_url, "token_file": "t"}))
    server = start_server(home, str(MODELS / "linear.onnx"))
    try:
        assert server.info["pid"] == server.process.pid
    finally:
        server.stop()


@pytest.mark.slow  # seconds: CI runs it, the fast part does not
def test_detach_passes_every_setting_to_the_server(tmp_path: Path) -> None:
    token_file = tmp_path / "secret" / "token"
    env = {**os.environ, "MLBRIDGE_HOME": str(tmp_path / "home")}
    done = mlbridge(
        "serve", "--detach", "--token-file", str(token_file), str(MODELS / "linear.onnx"), env=env
    )
    assert done.returncode == 0, done.stderr
    try:
        info = json.loads((tmp_path / "home" / "server.json").read_text())
        assert info["token_file"] == str(token_file)
        assert info["models"] == ["linear", "linear.vjp"]
    finally:
        assert mlbridge("stop", env=env).returncode == 0


@pytest.mark.slow  # seconds: CI runs it, the fast part does not
def test_model_folder_with_config_and_detach(tmp_path: Path, mnist) -> None:
    repository = tmp_path / "models" / "digits"
    repository.mkdir(parents=True)
    (repository / "model.onnx").write_bytes((MODELS / "linear.onnx").read_bytes())
    labels = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    (repository / "config.json").write_text(
        json.dumps({"labels": labels, "description": "a linear toy"})
    )
    env = {**os.environ, "MLBRIDGE_HOME": str(tmp_path / "home")}
    detached = mlbridge("serve", "--detach", str(tmp_path / "models"), env=env)
    assert detached.returncode == 0, detached.stderr
    assert detached.stdout.startswith("http://127.0.0.1:")
    try:
        from mlbridge.client import Client

        with Client(home=tmp_path / "home") as client:
            meta = client.metadata("digits")
            assert meta["parameters"]["labels"] == labels
            assert meta["parameters"]["description"] == "a linear toy"
            assert client.predict("digits", mnist[0][:2]).shape == (2, 10)
    finally:
        assert mlbridge("stop", env=env).returncode == 0
    assert not (tmp_path / "home" / "server.json").exists()


def test_keras_model_without_the_training_extra_names_the_extra(tmp_path: Path) -> None:
    blocker = tmp_path / "blocked"
    (blocker / "keras").mkdir(parents=True)
    (blocker / "keras" / "__init__.py").write_text("raise ImportError('keras is blocked')\n")
    (tmp_path / "m.keras").write_bytes(b"not read")
    env = {**os.environ, "MLBRIDGE_HOME": str(tmp_path / "home"), "PYTHONPATH": str(blocker)}
    done = mlbridge("serve", "--strict", str(tmp_path / "m.keras"), env=env)
    assert done.returncode == 1
    assert "pip install 'mlbridge[training]'" in done.stderr


class FakeServer:
    """A stranger on loopback that claims to be mlbridge and records who talks to it."""

    def __init__(self, pid: int) -> None:
        import http.server
        import threading

        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append((self.path, self.headers.get("Authorization")))
                body = json.dumps({"name": "mlbridge", "version": "0", "pid": pid}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def plant(home: Path, url: str, pid: int) -> dict[str, str]:
    home.mkdir(mode=0o700, exist_ok=True)
    write_private(home / "token", "the-real-secret\n")
    document = {"url": url, "pid": pid, "token_file": str(home / "token")}
    write_private(home / "server.json", json.dumps(document))
    return {**os.environ, "MLBRIDGE_HOME": str(home)}


def test_stop_kills_nothing_and_sends_no_secret_to_a_planted_server(tmp_path: Path) -> None:
    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    fake = FakeServer(pid=decoy.pid)  # it names an unrelated process of ours as its pid
    try:
        env = plant(tmp_path / "open", fake.url, decoy.pid)
        (tmp_path / "open" / "server.json").chmod(0o644)  # anyone could have written it
        refused = mlbridge("stop", env=env)
        assert refused.returncode == 1 and "open to others" in refused.stderr
        assert fake.seen == []  # nothing was sent, least of all the secret
        env = plant(tmp_path / "stale", fake.url, 999_999_999)  # a pid that is gone
        stale = mlbridge("stop", env=env)
        assert stale.returncode == 1 and "stale" in stale.stderr and fake.seen == []
        env = plant(tmp_path / "liar", fake.url, os.getpid())  # alive, but not what it says
        lied = mlbridge("stop", env=env)
        assert lied.returncode == 1 and "could not prove it knows the secret" in lied.stderr
        assert [path.split("?")[0] for path, _ in fake.seen] == ["/v2/health/proof"]
        assert all(authorization is None for _, authorization in fake.seen)  # no secret sent
        assert decoy.poll() is None  # no process was signalled
    finally:
        fake.close()
        decoy.kill()
        decoy.wait()


def test_detach_reports_why_the_server_did_not_start(tmp_path: Path) -> None:
    env = {**os.environ, "MLBRIDGE_HOME": str(tmp_path / "home")}
    failed = mlbridge("serve", str(tmp_path / "missing.onnx"), "--detach", env=env)
    assert failed.returncode == 1
    assert "exited (status 1) before it was ready: " in failed.stderr
    assert "missing.onnx: no such file or folder; see " in failed.stderr
