"""The golden payloads in tests/testdata: the live server answers each as recorded."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from support import TESTDATA
from wolframclient.deserializers import binary_deserialize

from mlbridge.codecs.mathematica import parse_list

IMAGE_8000_LABEL = 4


def read(name: str) -> bytes:
    return (TESTDATA / name).read_bytes()


def v2_binary_logits(body: bytes, header_length: int) -> np.ndarray:
    header = json.loads(body[:header_length])
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 40
    return np.frombuffer(body[header_length:], "<f4").reshape(10)


DECODERS = {
    "text": lambda body, _: parse_list(body).astype(np.float32),
    "wxf": lambda body, _: np.asarray(binary_deserialize(body), np.float32),
    "v2.json": lambda body, _: np.asarray(json.loads(body)["outputs"][0]["data"], np.float32),
    "v2bin": v2_binary_logits,
}
REQUESTS = {
    "text": ("/mnist", {"Content-Type": "text/x-mathematica"}),
    "wxf": ("/mnist", {"Content-Type": "application/vnd.wolfram.wxf"}),
    "v2.json": ("/v2/models/mnist/infer", {"Content-Type": "application/json"}),
    "v2bin": ("/v2/models/mnist/infer", {}),
}


@pytest.mark.parametrize("fmt", sorted(DECODERS))
def test_live_reply_matches_the_golden_reply(server, fmt: str) -> None:
    path, headers = REQUESTS[fmt]
    if fmt == "v2bin":
        headers = {
            "Inference-Header-Content-Length": read("mnist-8000.request.v2bin.header-length")
            .decode()
            .strip()
        }
    reply = httpx.post(
        server.url + path,
        content=read(f"mnist-8000.request.{fmt}"),
        headers={**headers, **server.auth},
    )
    assert reply.status_code == 200, reply.text
    reply_length = int(reply.headers.get("inference-header-content-length", 0))
    golden_length = int((TESTDATA / "mnist-8000.reply.v2bin.header-length").read_text())
    live = DECODERS[fmt](reply.content, reply_length)
    golden = DECODERS[fmt](read(f"mnist-8000.reply.{fmt}"), golden_length)
    assert live.shape == golden.shape == (10,) or live.shape == golden.shape == (1, 10)
    assert np.allclose(live, golden, atol=1e-5), "demo models changed: run make_golden.py"
    assert int(np.argmax(golden)) == IMAGE_8000_LABEL


def test_original_design_request_is_the_text_request_after_a_secret_line(server) -> None:
    body = server.token.encode() + b"\n" + read("mnist-8000.request.text")
    reply = httpx.post(f"{server.url}/mnist", content=body)
    assert np.allclose(
        parse_list(reply.content), parse_list(read("mnist-8000.reply.text")), atol=1e-5
    )
