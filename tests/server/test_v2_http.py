"""The KServe V2 REST API of a real `mlbridge serve` over a real socket, on real MNIST."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from conftest import v2_json

FLOORS = {"mnist": 0.93, "mnist-cnn": 0.97}


@pytest.fixture(scope="module")
def http(server) -> httpx.Client:
    with httpx.Client(base_url=server.url, headers=server.auth, timeout=120) as client:
        yield client


@pytest.mark.parametrize("model", sorted(FLOORS))
def test_held_out_accuracy_in_one_request(http, mnist, model: str) -> None:
    images, labels = mnist
    reply = http.post(f"/v2/models/{model}/infer", json=v2_json(images))
    assert reply.status_code == 200, reply.text
    output = reply.json()["outputs"][0]
    assert output["shape"] == [2000, 10] and output["datatype"] == "FP32"
    logits = np.asarray(output["data"], dtype=np.float32).reshape(2000, 10)
    accuracy = float(np.mean(logits.argmax(axis=1) == labels))
    assert accuracy >= FLOORS[model], f"{model}: held-out accuracy {accuracy:.4f}"


def test_health_is_open_everything_else_needs_the_secret(server) -> None:
    assert httpx.get(f"{server.url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{server.url}/v2/health/ready").json() == {"ready": True}
    for path in ("/v2", "/v2/models", "/v2/models/mnist", "/v2/models/mnist/ready"):
        reply = httpx.get(server.url + path)
        assert reply.status_code == 401
        assert str(server.token_file) in reply.json()["error"]
    wrong = httpx.get(f"{server.url}/v2", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "wrong secret" in wrong.json()["error"]
    assert wrong.headers["www-authenticate"].startswith("Bearer")


def test_metadata_describes_the_signature(http) -> None:
    meta = http.get("/v2/models/mnist").json()
    assert meta["name"] == "mnist" and meta["platform"] == "onnx"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 28, 28]}]
    assert meta["outputs"][0]["shape"] == [-1, 10]
    assert meta["parameters"]["labels"] == [str(d) for d in range(10)]
    assert http.get("/v2/models/mnist/ready").json() == {"name": "mnist", "ready": True}
    assert {m["name"] for m in http.get("/v2/models").json()["models"]} == set(FLOORS)
    assert http.get("/v2").json()["name"] == "mlbridge"


def test_binary_extension_matches_json(http, mnist) -> None:
    images = mnist[0][:64]
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [64, 28, 28],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": images.nbytes},
                }
            ],
            "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
        }
    ).encode()
    reply = http.post(
        "/v2/models/mnist/infer",
        content=header + images.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert reply.status_code == 200, reply.text
    length = int(reply.headers["inference-header-content-length"])
    binary = np.frombuffer(reply.content[length:], "<f4").reshape(64, 10)
    as_json = http.post("/v2/models/mnist/infer", json=v2_json(images)).json()
    assert np.array_equal(
        binary, np.asarray(as_json["outputs"][0]["data"], np.float32).reshape(64, 10)
    )


BAD_REQUESTS = [
    ("/v2/models/nope/infer", {"inputs": []}, 404, "this server serves: mnist, mnist-cnn"),
    (
        "/v2/models/mnist/infer",
        {"inputs": [{"name": "input", "shape": [3, 784], "datatype": "FP32", "data": [0] * 2352}]},
        400,
        "expects input 'input' of shape [-1, 28, 28] (FP32); got shape [3, 784]",
    ),
    (
        "/v2/models/mnist/infer",
        {
            "inputs": [
                {"name": "pixels", "shape": [1, 28, 28], "datatype": "FP32", "data": [0] * 784}
            ]
        },
        400,
        "expects inputs 'input' of shape [-1, 28, 28] (FP32); got ['pixels']",
    ),
    (
        "/v2/models/mnist/infer",
        {
            "inputs": [
                {"name": "input", "shape": [1, 28, 28], "datatype": "FP64", "data": [0] * 784}
            ]
        },
        400,
        "got datatype FP64",
    ),
    (
        "/v2/models/mnist/infer",
        {
            "inputs": [
                {"name": "input", "shape": [2, 28, 28], "datatype": "FP32", "data": [0] * 784}
            ]
        },
        400,
        "shape [2, 28, 28] needs 1568 values; 'data' holds 784",
    ),
]


@pytest.mark.parametrize(("path", "body", "status", "message"), BAD_REQUESTS)
def test_bad_requests_get_precise_errors(http, path, body, status, message) -> None:
    reply = http.post(path, json=body)
    assert reply.status_code == status
    assert message in reply.json()["error"]
    assert http.get("/v2/health/ready").status_code == 200


def test_garbage_and_nan_are_400(http) -> None:
    for content in (
        b"",
        b"\xff\xfe",
        b"{",
        b'{"inputs": [{"name": "input", "shape": [1], "datatype": "FP32", "data": [NaN]}]}',
    ):
        reply = http.post("/v2/models/mnist/infer", content=content)
        assert reply.status_code == 400, content
        assert reply.json()["error"]


def test_unknown_route_and_method(http) -> None:
    assert http.get("/v2/nothing/here").status_code == 404
    assert http.get("/mnist").status_code == 405
