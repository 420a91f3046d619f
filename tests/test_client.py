"""The Python client over a real socket: the app on fake runtimes, served in a thread.

(The client against a real `mlbridge serve` process is in test_interop.py.)
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from support.fakes import SECRET, FailingRuntime, ThreadedServer, fake_registry, in_process_app

from mlbridge.client import Client, ServerError, _error_message
from mlbridge.connection import Connection, publish
from mlbridge.errors import ConfigError, GradientUnavailable


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    registry = fake_registry()
    with ThreadedServer(in_process_app(registry)) as running:
        yield running.url
    registry.close()


@pytest.fixture
def client(url: str) -> Iterator[Client]:
    with Client(url, token=SECRET) as connected:
        yield connected


def test_lists_models_and_reads_metadata(client: Client) -> None:
    assert client.models() == ["echo", "echo.vjp", "failing", "slow"]
    meta = client.metadata("echo")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3]}]
    assert client.metadata("echo") is meta  # cached
    assert client.server_metadata()["name"] == "mlbridge"
    assert client.live()


def test_predict_one_example_a_batch_or_named_inputs(client: Client) -> None:
    single = client.predict("echo", [1.0, 2.0, 3.0])
    assert single.dtype == np.float32 and single.tolist() == [1, 2, 3]
    batch = client.predict("echo", np.arange(6, dtype=np.float64).reshape(2, 3))
    assert batch.shape == (2, 3) and batch.dtype == np.float32
    named = client.predict("echo", {"input": np.ones((1, 3))})
    assert list(named) == ["output"] and named["output"].tolist() == [[1, 1, 1]]


def test_gradient_and_jacobian_through_the_companion(client: Client) -> None:
    assert client.gradient_companion("echo") == "echo.vjp"
    assert client.gradient("echo", [1.0, 2.0, 3.0]).tolist() == [1, 1, 1]
    assert client.gradient("echo", [1.0, 2.0, 3.0], [4.0, 5.0, 6.0]).tolist() == [4, 5, 6]
    assert client.jacobian("echo", [1.0, 2.0, 3.0]).tolist() == np.eye(3).tolist()
    with pytest.raises(GradientUnavailable, match="model 'slow' serves no gradient: it is a fake"):
        client.gradient("slow", [1.0, 2.0, 3.0])


ERRORS = [
    ("nope", {"input": np.ones((1, 3))}, 404, "no model named 'nope'; this server serves: echo"),
    ("echo", {"input": np.ones((1, 4))}, 400, "expects input 'input' of shape [-1, 3] (FP32)"),
    ("echo", {"pixels": np.ones((1, 3))}, 400, "got ['pixels']"),
    ("failing", {"input": np.ones((1, 3))}, 500, FailingRuntime.message),
]


@pytest.mark.parametrize(("model", "inputs", "status", "message"), ERRORS)
def test_error_replies_are_server_errors(client: Client, model, inputs, status, message) -> None:
    with pytest.raises(ServerError) as caught:
        client.predict(model, inputs)
    assert caught.value.status == status and message in caught.value.message


def test_a_missing_secret_is_a_401(url: str) -> None:
    with Client(url, token=None) as stranger, pytest.raises(ServerError) as caught:
        stranger.models()
    assert caught.value.status == 401


def test_a_wrong_secret_is_never_sent_a_server_that_cannot_prove_it(url: str) -> None:
    with Client(url, token="not-the-secret") as client, pytest.raises(ConfigError) as caught:
        client.models()
    assert "could not prove it knows the secret" in caught.value.message


def test_the_secret_may_come_from_a_token_file(url: str, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(SECRET + "\n")
    os.chmod(token_file, 0o600)
    with Client(url, token_file=token_file) as client:
        assert "echo" in client.models()


def test_discovers_the_server_through_its_connection_file(url: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    publish(home, Connection(url=url, pid=os.getpid(), token_file=home / "token"), SECRET)
    with Client(home=home) as client:
        assert client.url == url and "echo" in client.models()


def test_no_connection_file_says_how_to_start_a_server(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="start one with 'mlbridge serve'"):
        Client(home=tmp_path / "empty")


def test_an_unreachable_server_says_how_to_start_one() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    with Client(dead, token=SECRET) as client, pytest.raises(ConfigError) as caught:
        client.models()
    assert f"cannot reach the mlbridge server at {dead}" in caught.value.message


def test_a_model_of_several_inputs_needs_a_dict() -> None:
    client = Client("http://127.0.0.1:1", token=SECRET)
    client._metadata["two"] = {"inputs": [{"name": "a"}, {"name": "b"}]}
    with pytest.raises(ConfigError, match="model 'two' has inputs a, b; pass a dict of arrays"):
        client.predict("two", np.ones(3))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"error": "bad shape", "code": "ShapeMismatch"}', "bad shape"),
        (b"Failure[...]", "Failure[...]"),
        (b"", "HTTP 502"),
    ],
)
def test_error_messages_come_from_json_or_the_body(body: bytes, message: str) -> None:
    assert _error_message(body, 502) == message


class ClosingHandler(BaseHTTPRequestHandler):
    """Answers as if keeping the connection alive, then closes it (an idle timeout's effect)."""

    protocol_version = "HTTP/1.1"
    connections: ClassVar[list[int]] = []

    def do_GET(self) -> None:
        self.connections.append(self.client_address[1])  # a new port per connection
        body = b'{"live": true}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


def test_a_connection_the_server_closed_while_idle_is_reopened_once() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ClosingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with Client(f"http://127.0.0.1:{server.server_address[1]}") as client:
            assert client.live() and client.live() and client.live()
        assert len(set(ClosingHandler.connections)) == 3  # each request after the first reopened
    finally:
        server.shutdown()
        server.server_close()
