"""Gradients served over HTTP: every wire format, FD checks, Jacobians, peers' clients, errors.

The demo models and functions are served by the session's real server process; models
without a gradient (TFLite, an ONNX op with no rule) by an in-process app.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
import scipy.optimize
from onnx import TensorProto, helper
from starlette.testclient import TestClient
from wolframclient.deserializers import binary_deserialize
from wolframclient.serializers import export

from mlbridge.auth import TokenAuthenticator
from mlbridge.client import Client
from mlbridge.codecs import v2
from mlbridge.codecs.mathematica import parse_list
from mlbridge.demo_functions.lennard_jones import LJ13_MINIMUM, icosahedron
from mlbridge.gradients import fd_relative_error
from mlbridge.registry import DEMO_MODELS, load_registry
from mlbridge.server.app import create_app
from mlbridge.settings import load_settings

SIDES = [2.0, 4.0, 8.0]
FACE_AREAS = [32.0, 16.0, 8.0]
TESTDATA_MODELS = Path(__file__).resolve().parents[1] / "testdata" / "models"


@pytest.fixture(scope="module")
def client(server) -> Client:
    with Client(home=server.home) as connected:
        yield connected


def cas(server, path: str, body: bytes, **headers: str) -> httpx.Response:
    reply = httpx.post(
        f"{server.url}{path}", content=body, headers={**server.auth, **headers}, timeout=60
    )
    assert reply.status_code == 200, reply.text
    return reply


# box_volume at [2, 4, 8]: gradient [32, 16, 8] through every wire format


def test_box_volume_gradient_as_mathematica_text(server) -> None:
    reply = cas(server, "/box_volume/gradient", b"{2., 4., 8.}")
    assert reply.content == b"{32., 16., 8.}"


def test_box_volume_gradient_as_wxf(server) -> None:
    body = export(np.array(SIDES), target_format="wxf")
    reply = cas(server, "/box_volume/gradient", body, **{"Content-Type": "application/x-wxf"})
    assert np.array_equal(binary_deserialize(reply.content), FACE_AREAS)


def test_box_volume_gradient_as_json(server) -> None:
    reply = cas(server, "/box_volume/gradient", b"[2, 4, 8]")
    assert json.loads(reply.content) == FACE_AREAS


def test_box_volume_gradient_through_the_v2_companion(server) -> None:
    meta = httpx.get(f"{server.url}/v2/models/box_volume", headers=server.auth).json()
    companion = meta["parameters"]["gradient"]
    assert companion == "box_volume.vjp"
    tensor = {"name": "sides", "shape": [1, 3], "datatype": "FP64", "data": SIDES}
    document = {"inputs": [tensor]}  # no cotangent: ones
    reply = httpx.post(
        f"{server.url}/v2/models/{companion}/infer", json=document, headers=server.auth
    )
    assert reply.json()["outputs"][0]["data"] == FACE_AREAS
    body, headers = v2.encode_request({"sides": np.array([SIDES]), "output_cotangent": np.ones(1)})
    binary = httpx.post(
        f"{server.url}/v2/models/{companion}/infer",
        content=body,
        headers={**headers, **server.auth},
    )
    outputs = v2.decode_response(binary.content, binary.headers[v2.HEADER_LENGTH]).outputs
    assert outputs["sides_grad"].tolist() == [FACE_AREAS]


def test_box_volume_gradient_through_the_python_client(client) -> None:
    assert client.gradient("box_volume", SIDES).tolist() == FACE_AREAS
    assert client.jacobian("box_volume", SIDES).tolist() == FACE_AREAS


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'<|"x" -> {2., 4., 8.}, "cotangent" -> 0.5|>', "text/x-mathematica"),
        (b'{"x": [2, 4, 8], "cotangent": 0.5}', "application/json"),
        (
            export({"x": np.array(SIDES), "cotangent": 0.5}, target_format="wxf"),
            "application/x-wxf",
        ),
    ],
    ids=["text", "json", "wxf"],
)
def test_a_cotangent_scales_the_gradient(server, body: bytes, content_type: str) -> None:
    reply = cas(server, "/box_volume/gradient", body, Accept="application/json")
    assert json.loads(reply.content) == [16.0, 8.0, 4.0]


def test_a_batch_gradient_has_the_batch_shape(server) -> None:
    reply = cas(server, "/box_volume/gradient", b"{{2., 4., 8.}, {1., 1., 1.}}")
    assert parse_list(reply.content).tolist() == [FACE_AREAS, [1.0, 1.0, 1.0]]


def test_float64_text_replies_read_back_exactly(server, client) -> None:
    positions = icosahedron() + np.random.default_rng(1).normal(0, 0.01, (13, 3))
    reply = cas(server, "/lj13", json.dumps(positions.tolist()).encode(), Accept="text/plain")
    assert float(parse_list(b"{" + reply.content + b"}")[0]) == client.predict("lj13", positions)


# The demo nets: VJPs against float64 finite differences, Jacobians against VJPs


@pytest.mark.parametrize("model", ["mnist", "mnist-cnn"])
def test_served_vjp_matches_float64_finite_differences(client, mnist, model: str) -> None:
    forward = onnx.load(DEMO_MODELS / f"{model}.onnx")
    # MNIST's flat zero background gives the CNN's max-pool windows of exactly equal values:
    # there the net is not differentiable and central differences average two one-sided
    # slopes (5e-2 off). A 1e-3 dither of the held-out images removes the ties.
    dither = np.random.default_rng(1).uniform(0.0, 1e-3, (4, 28, 28)).astype(np.float32)
    images = mnist[0][:4] + dither
    cotangent = np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32)
    dx = client.gradient(model, images, cotangent)
    assert dx.shape == images.shape
    error = fd_relative_error(
        forward, {"input": images}, {"output": cotangent}, {"input": dx}, directions=4
    )
    assert error <= 1e-3, error


@pytest.mark.parametrize("model", ["mnist", "mnist-cnn"])
def test_jacobian_route_equals_ten_vjp_calls(server, client, mnist, model: str) -> None:
    image = mnist[0][0]
    reply = cas(server, f"/{model}/jacobian", json.dumps(image.tolist()).encode())
    jacobian = np.asarray(json.loads(reply.content), dtype=np.float32)
    assert jacobian.shape == (10, 28, 28)
    rows = [client.gradient(model, image, np.eye(10, dtype=np.float32)[k]) for k in range(10)]
    np.testing.assert_allclose(jacobian, np.stack(rows), rtol=0, atol=1e-6)
    assert np.allclose(client.gradient(model, image), jacobian.sum(axis=0), atol=1e-5)


# Lennard-Jones 13: a minimiser driven by the server's value and gradient


def test_lbfgs_with_server_gradients_finds_the_lj13_minimum(client) -> None:
    rng = np.random.default_rng(13)
    start = icosahedron() + rng.normal(0.0, 0.05, (13, 3))

    def energy_and_gradient(flat: np.ndarray) -> tuple[float, np.ndarray]:
        positions = flat.reshape(13, 3)
        value = float(client.predict("lj13", positions))
        return value, client.gradient("lj13", positions).ravel()

    result = scipy.optimize.minimize(
        energy_and_gradient, start.ravel(), jac=True, method="L-BFGS-B"
    )
    assert abs(result.fun - LJ13_MINIMUM) < 1e-4, result


# Standard clients and a clean serving process


def test_tritonclient_calls_the_gradient_companion(server) -> None:
    tritonclient = pytest.importorskip("tritonclient.http")
    triton = tritonclient.InferenceServerClient(server.url.removeprefix("http://"))
    headers = {"Authorization": server.auth["Authorization"]}
    results = []
    for binary in (True, False):
        sides = tritonclient.InferInput("sides", [2, 3], "FP64")
        sides.set_data_from_numpy(np.array([SIDES, [1.0, 2.0, 3.0]]), binary_data=binary)
        cotangent = tritonclient.InferInput("output_cotangent", [2], "FP64")
        cotangent.set_data_from_numpy(np.array([1.0, 2.0]), binary_data=binary)
        wanted = tritonclient.InferRequestedOutput("sides_grad", binary_data=binary)
        reply = triton.infer(
            "box_volume.vjp", [sides, cotangent], outputs=[wanted], headers=dict(headers)
        )
        results.append(reply.as_numpy("sides_grad"))
    assert results[0].tolist() == results[1].tolist() == [FACE_AREAS, [12.0, 6.0, 4.0]]


def test_the_server_serves_gradients_without_tensorflow_or_jax(server, client) -> None:
    assert client.gradient("mnist-cnn", np.zeros((28, 28), np.float32)).shape == (28, 28)
    maps = Path(f"/proc/{server.process.pid}/maps").read_text().lower()
    for library in ("tensorflow", "jax", "keras"):
        assert library not in maps, library


# Models without a gradient still serve inference; their gradient routes say why


@pytest.fixture(scope="module")
def gradientless(tmp_path_factory) -> TestClient:
    folder = tmp_path_factory.mktemp("gradientless")
    onnx.save(_topk_model(), folder / "topk.onnx")
    models = [TESTDATA_MODELS / "linear-lite.tflite", folder / "topk.onnx"]
    registry = load_registry(models)
    authenticator = TokenAuthenticator("s3cret", folder / "token")
    app = create_app(registry, authenticator, load_settings(environ={}))
    with TestClient(app, headers={"Authorization": "Bearer s3cret"}) as in_process:
        yield in_process


def _topk_model() -> onnx.ModelProto:
    """x [N, 4] -> the two largest of Tanh(x): TopK has no gradient rule."""
    k = helper.make_tensor("k", TensorProto.INT64, [1], [2])
    nodes = [
        helper.make_node("Tanh", ["x"], ["t"]),
        helper.make_node("TopK", ["t", "k"], ["output", "indices"], name="largest"),
    ]
    graph = helper.make_graph(
        nodes,
        "topk",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 2])],
        [k],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_tflite_gradient_route_says_why(gradientless: TestClient) -> None:
    image = json.dumps(np.zeros((28, 28)).tolist()).encode()
    reply = gradientless.post(
        "/linear-lite/gradient", content=image, headers={"Accept": "text/plain"}
    )
    assert reply.status_code == 422
    assert "TFLite models carry no gradient" in reply.text and reply.text.startswith("Failure[")
    meta = gradientless.get("/v2/models/linear-lite").json()
    assert "TFLite" in meta["parameters"]["gradient_unavailable"]
    assert gradientless.post("/linear-lite", content=image).status_code == 200


def test_an_op_without_a_gradient_rule_is_named(gradientless: TestClient) -> None:
    reply = gradientless.post(
        "/topk/jacobian", content=b"[1, 2, 3, 4]", headers={"Accept": "application/json"}
    )
    assert reply.status_code == 422
    assert "TopK" in reply.json()["error"] and reply.json()["code"] == "GradientUnavailable"
    assert gradientless.post("/topk", content=b"[1, 2, 3, 4]").json() == pytest.approx(
        np.tanh([4.0, 3.0]).tolist()
    )
