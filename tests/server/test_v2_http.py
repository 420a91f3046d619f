"""The KServe V2 REST API, in process: fake runtimes and the demo ONNX models, real MNIST."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import numpy as np
import pytest
from support import v2_json
from support.fakes import AUTH, HOME, FailingRuntime, SlowRuntime, fake_registry, in_process_app

FLOORS = {"mnist": 0.93, "mnist-cnn": 0.97}
IMAGES = np.random.default_rng(0).random((64, 28, 28), dtype=np.float32)


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


def test_health_is_open_everything_else_needs_the_secret(anon) -> None:
    assert anon.get("/v2/health/live").json() == {"live": True}
    assert anon.get("/v2/health/ready").json() == {"ready": True}
    for path in ("/v2", "/v2/models", "/v2/models/mnist", "/v2/models/mnist/ready"):
        reply = anon.get(path)
        assert reply.status_code == 401
        assert str(HOME / "token") in reply.json()["error"]
    wrong = anon.get("/v2", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "wrong secret" in wrong.json()["error"]
    assert wrong.headers["www-authenticate"].startswith("Bearer")


def test_metadata_describes_the_signature(http, registry) -> None:
    meta = http.get("/v2/models/mnist").json()
    assert meta["name"] == "mnist" and meta["platform"] == "onnx"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 28, 28]}]
    assert meta["outputs"][0]["shape"] == [-1, 10]
    assert meta["parameters"]["labels"] == [str(d) for d in range(10)]
    assert http.get("/v2/models/mnist/ready").json() == {"name": "mnist", "ready": True}
    assert [m["name"] for m in http.get("/v2/models").json()["models"]] == registry.names()
    assert http.get("/v2").json()["name"] == "mlbridge"


def test_metadata_names_the_gradient_or_why_there_is_none(http) -> None:
    echo = http.get("/v2/models/echo").json()["parameters"]
    assert echo == {"gradient": "echo.vjp"}
    companion = http.get("/v2/models/echo.vjp").json()
    assert companion["parameters"]["gradient_of"] == "echo"
    assert [spec["name"] for spec in companion["inputs"]] == ["input", "output_cotangent"]
    slow = http.get("/v2/models/slow").json()["parameters"]
    assert slow == {"gradient_unavailable": "it is a fake without one"}


def test_binary_extension_matches_json(http) -> None:
    images = IMAGES
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


def test_echo_returns_its_input_with_id_and_requested_outputs(http) -> None:
    request = {**v2_json(np.arange(6, dtype=np.float32).reshape(2, 3)), "id": "r-1"}
    reply = http.post("/v2/models/echo/infer", json={**request, "outputs": [{"name": "output"}]})
    assert reply.status_code == 200, reply.text
    document = reply.json()
    assert document["id"] == "r-1" and document["model_name"] == "echo"
    assert document["outputs"] == [
        {"name": "output", "shape": [2, 3], "datatype": "FP32", "data": [0, 1, 2, 3, 4, 5]}
    ]
    unknown = http.post("/v2/models/echo/infer", json={**request, "outputs": [{"name": "nope"}]})
    assert unknown.status_code == 400
    assert unknown.json()["error"] == "model 'echo' has outputs ['output']; requested ['nope']"


BAD_REQUESTS = [
    ("/v2/models/nope/infer", {"inputs": []}, 404, "this server serves: {served}"),
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
def test_bad_requests_get_precise_errors(http, registry, path, body, status, message) -> None:
    reply = http.post(path, json=body)
    assert reply.status_code == status
    assert message.format(served=", ".join(registry.names())) in reply.json()["error"]
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
    missing = http.get("/v2/nothing/here")
    assert missing.status_code == 404 and missing.json()["code"] == "RouteNotFound"
    wrong_method = http.get("/mnist")
    assert wrong_method.status_code == 405 and wrong_method.json()["code"] == "MethodNotAllowed"


def test_a_failing_runtime_is_a_500_that_names_the_model(http) -> None:
    reply = http.post("/v2/models/failing/infer", json=v2_json(np.ones((1, 3), np.float32)))
    assert reply.status_code == 500
    assert reply.json() == {
        "error": f"model 'failing' failed: {FailingRuntime.message}",
        "code": "InferenceFailed",
    }
    assert http.get("/v2/health/live").status_code == 200


def test_body_over_the_limit_is_413_before_it_is_parsed() -> None:
    from starlette.testclient import TestClient

    with TestClient(in_process_app(fake_registry(), max_body_mb=1), headers=AUTH) as small:
        reply = small.post("/v2/models/echo/infer", content=b"[" * (1024 * 1024 + 1))
    assert reply.status_code == 413 and reply.json()["code"] == "PayloadTooLarge"
    assert "exceeds the limit of 1048576 bytes" in reply.json()["error"]


def test_a_slow_model_runs_in_a_worker_thread_and_blocks_no_one() -> None:
    app = in_process_app(fake_registry())
    body = v2_json(np.ones((1, 3), np.float32))

    async def race() -> tuple[float, float]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=AUTH
        ) as client:
            started = time.perf_counter()
            slow = asyncio.create_task(client.post("/v2/models/slow/infer", json=body))
            await asyncio.sleep(0.05)
            live = await client.get("/v2/health/live")
            answered = time.perf_counter() - started
            assert live.status_code == 200 and not slow.done()
            assert (await slow).status_code == 200
            return answered, time.perf_counter() - started

    answered, slow_seconds = asyncio.run(race())
    assert slow_seconds >= SlowRuntime.delay_s
    assert answered < SlowRuntime.delay_s, f"the health check waited {answered:.2f} s"
