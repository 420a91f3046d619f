"""Third-party clients against the real server: tritonclient (V2) and wolframclient (WXF)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from support import v2_json
from wolframclient.deserializers import binary_deserialize
from wolframclient.serializers import export

from mlbridge.client import Client, ServerError


@pytest.fixture(scope="module")
def triton_client(server):
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    yield client
    client.close()


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_unchanged(server, triton_client, mnist, binary: bool) -> None:
    images, labels = mnist
    headers = server.auth
    assert triton_client.is_server_live()
    assert triton_client.is_model_ready("mnist", headers=dict(headers))
    meta = triton_client.get_model_metadata("mnist", headers=dict(headers))
    assert meta["inputs"][0]["shape"] == [-1, 28, 28]
    batch = images[:200]
    tensor = triton.InferInput("input", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    wanted = triton.InferRequestedOutput("output", binary_data=binary)
    result = triton_client.infer("mnist", [tensor], outputs=[wanted], headers=dict(headers))
    logits = result.as_numpy("output")
    assert logits.shape == (200, 10)
    assert np.mean(logits.argmax(axis=1) == labels[:200]) >= 0.93


def test_tritonclient_without_secret_is_refused(server, triton_client) -> None:
    with pytest.raises(triton.InferenceServerException, match="missing secret"):
        triton_client.get_model_metadata("mnist")


def test_wolframclient_wxf_batch_equals_the_v2_answer(server, mnist) -> None:
    images = mnist[0]
    body = export(images, target_format="wxf")
    reply = httpx.post(
        f"{server.url}/mnist",
        content=body,
        timeout=60,
        headers={**server.auth, "Content-Type": "application/vnd.wolfram.wxf"},
    )
    assert reply.status_code == 200 and reply.content.startswith(b"8:")
    from_wxf = np.asarray(binary_deserialize(reply.content))
    assert from_wxf.shape == (2000, 10) and from_wxf.dtype == np.float32
    v2 = httpx.post(
        f"{server.url}/v2/models/mnist/infer",
        headers=server.auth,
        timeout=60,
        json=v2_json(images),
    )
    from_json = np.asarray(v2.json()["outputs"][0]["data"], np.float32).reshape(2000, 10)
    assert np.array_equal(from_wxf, from_json)


def test_wxf_compressed_and_wxf_errors(server, mnist) -> None:
    body = export(mnist[0][:3], target_format="wxf", compress=True)
    assert body.startswith(b"8C:")
    reply = httpx.post(f"{server.url}/mnist", content=body, headers=server.auth)
    assert (
        np.asarray(binary_deserialize(reply.content)).argmax(axis=1).tolist()
        == mnist[1][:3].tolist()
    )
    truncated = httpx.post(f"{server.url}/mnist", content=body[:-7], headers=server.auth)
    assert truncated.status_code == 400
    failure = binary_deserialize(truncated.content)
    assert str(failure.head) == "Failure"
    assert failure.args[1]["Status"] == 400 and "WXF" in failure.args[1]["MessageTemplate"]


def test_python_client_discovers_the_server(server, mnist) -> None:
    images, labels = mnist
    with Client(home=server.home) as client:
        assert client.models() == [
            *("box_volume", "box_volume.vjp", "lj13", "lj13.vjp"),
            *("mnist", "mnist-cnn", "mnist-cnn.vjp", "mnist.vjp"),
        ]
        logits = client.predict("mnist-cnn", images)
        assert logits.shape == (2000, 10) and np.mean(logits.argmax(1) == labels) >= 0.97
        assert client.predict("mnist", images[0]).shape == (10,)
        with pytest.raises(ServerError, match="no model named 'nope'") as caught:
            client.predict("nope", {"input": images[:1]})
        assert caught.value.status == 404
