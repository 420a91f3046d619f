"""The CAS endpoint `POST /{model}` of a real server: the original design's wire format and more."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from conftest import v2_json
from mlbridge.codecs.mathematica import format_list, parse_list

FORM = {"Content-Type": "application/x-www-form-urlencoded"}  # what URLFetch-style clients send


def as_text(array: np.ndarray) -> bytes:
    return format_list(array).encode()


def test_original_request_secret_on_the_first_line(server, mnist) -> None:
    images, labels = mnist
    for index in range(5):
        body = server.token.encode() + b"\n" + as_text(images[index])
        reply = httpx.post(f"{server.url}/mnist", content=body, headers=FORM)
        assert reply.status_code == 200, reply.text
        logits = parse_list(reply.content)
        assert logits.shape == (10,)
        assert logits.argmax() == labels[index]
        assert reply.text.startswith("{") and "e" not in reply.text


def test_batch_in_text_gives_one_row_per_image(server, mnist) -> None:
    images, labels = mnist
    reply = httpx.post(
        f"{server.url}/mnist-cnn", content=as_text(images[:100]), headers=server.auth, timeout=60
    )
    logits = parse_list(reply.content)
    assert logits.shape == (100, 10)
    assert np.mean(logits.argmax(axis=1) == labels[:100]) >= 0.95


def test_text_reply_round_trips_float32_exactly(server, mnist) -> None:
    images = mnist[0][:8]
    text = httpx.post(f"{server.url}/mnist", content=as_text(images), headers=server.auth)
    v2 = httpx.post(
        f"{server.url}/v2/models/mnist/infer",
        headers=server.auth,
        json=v2_json(images),
    )
    expected = np.asarray(v2.json()["outputs"][0]["data"], np.float32).reshape(8, 10)
    assert np.array_equal(parse_list(text.content).astype(np.float32), expected)


def test_json_lists_on_the_cas_endpoint(server, mnist) -> None:
    images, labels = mnist
    reply = httpx.post(f"{server.url}/mnist", json=images[:3].tolist(), headers=server.auth)
    assert reply.headers["content-type"].startswith("application/json")
    assert np.asarray(reply.json()).argmax(axis=1).tolist() == labels[:3].tolist()


def test_accept_header_chooses_the_reply_format(server, mnist) -> None:
    reply = httpx.post(
        f"{server.url}/mnist",
        content=as_text(mnist[0][0]),
        headers={**server.auth, "Accept": "application/json"},
    )
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
def test_bad_bodies_get_a_failure_expression(server, body, status, message) -> None:
    reply = httpx.post(f"{server.url}/mnist", content=body, headers=server.auth)
    assert reply.status_code == status
    assert reply.text.startswith('Failure["MLBridge", <|"MessageTemplate" -> "')
    assert message in reply.text and f'"Status" -> {status}' in reply.text


def test_authentication_on_the_cas_endpoint(server, mnist) -> None:
    image = as_text(mnist[0][0])
    no_secret = httpx.post(f"{server.url}/mnist", content=image)
    assert no_secret.status_code == 401 and "missing secret" in no_secret.text
    wrong_line = httpx.post(f"{server.url}/mnist", content=b"not-the-secret\n" + image)
    assert wrong_line.status_code == 401 and "wrong secret" in wrong_line.text
    wrong_header = httpx.post(
        f"{server.url}/mnist", content=image, headers={"Authorization": "Bearer nope"}
    )
    assert wrong_header.status_code == 401
    assert server.token not in no_secret.text + wrong_line.text + wrong_header.text


def test_unknown_model_lists_the_known_ones(server) -> None:
    reply = httpx.post(f"{server.url}/nope", content=b"{1}", headers=server.auth)
    assert reply.status_code == 404
    assert "this server serves: mnist, mnist-cnn" in reply.text


def test_server_keeps_serving_after_every_bad_request(server, mnist) -> None:
    reply = httpx.post(f"{server.url}/mnist", content=as_text(mnist[0][0]), headers=server.auth)
    assert reply.status_code == 200 and parse_list(reply.content).argmax() == mnist[1][0]
    assert server.process.poll() is None


def test_wxf_is_recognised_whatever_the_content_type(server, mnist) -> None:
    from wolframclient.deserializers import binary_deserialize
    from wolframclient.serializers import export

    body = export(mnist[0][:2], target_format="wxf")
    reply = httpx.post(f"{server.url}/mnist", content=body, headers={**server.auth, **FORM})
    assert reply.headers["content-type"] == "application/vnd.wolfram.wxf"
    assert np.asarray(binary_deserialize(reply.content)).argmax(1).tolist() == [
        *mnist[1][:2].tolist()
    ]
    wxf_reply = httpx.post(
        f"{server.url}/mnist",
        content=as_text(mnist[0][0]),
        headers={**server.auth, "Accept": "application/vnd.wolfram.wxf"},
    )
    assert np.asarray(binary_deserialize(wxf_reply.content)).shape == (10,)


def test_text_is_text_whatever_the_content_type_says(server, mnist) -> None:
    reply = httpx.post(
        f"{server.url}/mnist",
        content=as_text(mnist[0][0]),
        headers={**server.auth, "Content-Type": "application/json"},
    )
    assert reply.status_code == 200 and parse_list(reply.content).argmax() == mnist[1][0]
