"""The CAS routes `POST /{model}`, `/{model}/gradient`, `/{model}/jacobian`, mostly in process.

The original design's wire format and more, on the demo models and the fakes; one
test checks a real server process survives every bad request.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from support import v2_json
from support.fakes import SECRET, FailingRuntime
from wolframclient.deserializers import binary_deserialize
from wolframclient.serializers import export

from mlbridge.codecs.mathematica import format_list, parse_list

FORM = {"Content-Type": "application/x-www-form-urlencoded"}  # what URLFetch-style clients send
WXF = "application/vnd.wolfram.wxf"
IMAGES = np.random.default_rng(1).random((8, 28, 28), dtype=np.float32)


def as_text(array: np.ndarray) -> bytes:
    return format_list(array).encode()


def test_original_request_secret_on_the_first_line(anon, mnist) -> None:
    images, labels = mnist
    for index in range(5):
        body = SECRET.encode() + b"\n" + as_text(images[index])
        reply = anon.post("/mnist", content=body, headers=FORM)
        assert reply.status_code == 200, reply.text
        logits = parse_list(reply.content)
        assert logits.shape == (10,)
        assert logits.argmax() == labels[index]
        assert reply.text.startswith("{") and "e" not in reply.text


def test_batch_in_text_gives_one_row_per_image(http, mnist) -> None:
    images, labels = mnist
    reply = http.post("/mnist-cnn", content=as_text(images[:100]))
    logits = parse_list(reply.content)
    assert logits.shape == (100, 10)
    assert np.mean(logits.argmax(axis=1) == labels[:100]) >= 0.95


def test_text_reply_round_trips_float32_exactly(http) -> None:
    text = http.post("/mnist", content=as_text(IMAGES))
    v2 = http.post("/v2/models/mnist/infer", json=v2_json(IMAGES))
    expected = np.asarray(v2.json()["outputs"][0]["data"], np.float32).reshape(8, 10)
    assert np.array_equal(parse_list(text.content).astype(np.float32), expected)


def test_json_lists_on_the_cas_endpoint(http, mnist) -> None:
    images, labels = mnist
    reply = http.post("/mnist", json=images[:3].tolist())
    assert reply.headers["content-type"].startswith("application/json")
    assert np.asarray(reply.json()).argmax(axis=1).tolist() == labels[:3].tolist()


def test_accept_header_chooses_the_reply_format(http) -> None:
    reply = http.post("/mnist", content=as_text(IMAGES[0]), headers={"Accept": "application/json"})
    assert len(reply.json()) == 10


BAD_BODIES = [
    (b"{{1,2},{3}}", 400, "ragged lists at depth 2"),
    (b"", 400, "empty body"),
    (b"garbage", 400, "unexpected character 'g'"),
    (
        b"{" + b",".join([b"{" + b",".join([b"0."] * 27) + b"}"] * 28) + b"}",
        400,
        "shape [28, 28] for one example or [-1, 28, 28] for a batch; got shape [28, 27]",
    ),
    (b"{1.5e-7}", 400, "unexpected character 'e'"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD_BODIES)
def test_bad_bodies_get_a_failure_expression(http, body, status, message) -> None:
    reply = http.post("/mnist", content=body)
    assert reply.status_code == status
    assert reply.text.startswith('Failure["MLBridge", <|"MessageTemplate" -> "')
    assert message in reply.text and f'"Status" -> {status}' in reply.text


def test_authentication_on_the_cas_endpoint(anon) -> None:
    image = as_text(IMAGES[0])
    no_secret = anon.post("/mnist", content=image)
    assert no_secret.status_code == 401 and "missing secret" in no_secret.text
    wrong_line = anon.post("/mnist", content=b"not-the-secret\n" + image)
    assert wrong_line.status_code == 401 and "wrong secret" in wrong_line.text
    wrong_header = anon.post("/mnist", content=image, headers={"Authorization": "Bearer nope"})
    assert wrong_header.status_code == 401
    assert SECRET not in no_secret.text + wrong_line.text + wrong_header.text


def test_unknown_model_lists_the_known_ones(http, registry) -> None:
    reply = http.post("/nope", content=b"{1}")
    assert reply.status_code == 404
    assert f"this server serves: {', '.join(registry.names())}" in reply.text


def test_a_failing_runtime_is_a_500_failure(http) -> None:
    reply = http.post("/failing", content=b"{1., 2., 3.}")
    assert reply.status_code == 500
    assert f"model 'failing' failed: {FailingRuntime.message}" in reply.text
    assert '"Status" -> 500, "Code" -> "InferenceFailed"' in reply.text


def test_server_keeps_serving_after_every_bad_request(server) -> None:
    for body, _, _ in BAD_BODIES:
        httpx.post(f"{server.url}/mnist", content=body, headers=server.auth)
    reply = httpx.post(f"{server.url}/mnist", content=as_text(IMAGES[0]), headers=server.auth)
    assert reply.status_code == 200 and parse_list(reply.content).shape == (10,)
    assert server.process.poll() is None


def test_wxf_is_recognised_whatever_the_content_type(http, mnist) -> None:
    body = export(mnist[0][:2], target_format="wxf")
    reply = http.post("/mnist", content=body, headers=FORM)
    assert reply.headers["content-type"] == WXF
    assert np.asarray(binary_deserialize(reply.content)).argmax(1).tolist() == [
        *mnist[1][:2].tolist()
    ]
    wxf_reply = http.post("/mnist", content=as_text(mnist[0][0]), headers={"Accept": WXF})
    assert np.asarray(binary_deserialize(wxf_reply.content)).shape == (10,)


def test_text_is_text_whatever_the_content_type_says(http) -> None:
    reply = http.post(
        "/mnist", content=as_text(IMAGES[0]), headers={"Content-Type": "application/json"}
    )
    assert reply.status_code == 200 and parse_list(reply.content).shape == (10,)


# The gradient routes, on the echo model (its Jacobian is the identity)

GRADIENTS = [
    (b"{1., 2., 3.}", [1, 1, 1]),  # the default cotangent: ones
    (b"{{1., 2., 3.}, {4., 5., 6.}}", [[1, 1, 1], [1, 1, 1]]),
    (b'<|"x" -> {1., 2., 3.}, "cotangent" -> {4., 5., 6.}|>', [4, 5, 6]),
    (b'{"x": [1, 2, 3], "cotangent": [0, 1, 0]}', [0, 1, 0]),
    (b"[1, 2, 3]", [1, 1, 1]),
]


@pytest.mark.parametrize(("body", "expected"), GRADIENTS)
def test_gradient_is_the_cotangent_through_the_identity(http, body, expected) -> None:
    reply = http.post("/echo/gradient", content=body)
    assert reply.status_code == 200, reply.text
    as_json = reply.headers["content-type"].startswith("application/json")
    assert (reply.json() if as_json else parse_list(reply.content).tolist()) == expected


def test_jacobian_of_the_echo_model_is_the_identity(http) -> None:
    reply = http.post("/echo/jacobian", content=b"{1., 2., 3.}")
    assert reply.status_code == 200, reply.text
    assert parse_list(reply.content).tolist() == np.eye(3).tolist()
    batch = http.post("/echo/jacobian", content=b"{{1., 2., 3.}}")
    assert batch.status_code == 400 and "takes one example" in batch.text


def test_gradient_errors_say_why(http) -> None:
    unavailable = http.post("/slow/gradient", content=b"{1., 2., 3.}")
    assert unavailable.status_code == 422
    assert "model 'slow' serves no gradient: it is a fake without one" in unavailable.text
    unknown = http.post("/echo/gradient", content=b'<|"x" -> {1., 2., 3.}, "dy" -> 1.|>')
    assert unknown.status_code == 400 and "got keys ['dy', 'x']" in unknown.text
    shape = http.post("/echo/gradient", content=b'<|"x" -> {1., 2., 3.}, "cotangent" -> {1.}|>')
    assert shape.status_code == 400
    assert "the cotangent of model 'echo' has the shape of its output 'output': [3]" in shape.text


def test_a_companion_says_it_is_itself_a_gradient(http) -> None:
    reply = http.post("/mnist.vjp/gradient", content=b"{1.}")
    assert reply.status_code == 422
    assert "model 'mnist.vjp' serves no gradient: it is the gradient of 'mnist'" in reply.text
