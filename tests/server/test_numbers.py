"""Strict numbers over HTTP: NaN and infinities refused in every format unless the model's
config opts in, numbers too large for their type refused, results holding NaN refused, and
no input answered with a 500. In process, on fake runtimes."""

from __future__ import annotations

import asyncio
import json
import struct
import zlib
from collections.abc import Iterator

import numpy as np
import pytest
from starlette.testclient import TestClient
from support.fakes import AUTH, EchoGradientRuntime, EchoRuntime, FakeRuntime, in_process_app
from support.fakes import served as serve

from mlbridge.codecs import v2, wxf
from mlbridge.inference import INLINE_MAX_VALUES
from mlbridge.model_config import ModelConfig
from mlbridge.protocol import ModelSignature, TensorSpec
from mlbridge.registry import ModelRegistry

OPT_IN = ModelConfig(allow_nonfinite=True)
WXF_TYPE = {"content-type": "application/vnd.wolfram.wxf"}


class LogRuntime(FakeRuntime):
    """log(input): NaN for a negative input, -Infinity for 0."""

    def compute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            return {"output": np.log(inputs["input"])}


class Int8Runtime(EchoRuntime):
    fake_signature = ModelSignature(
        inputs=(TensorSpec("input", "INT8", (-1, 3)),),
        outputs=(TensorSpec("output", "INT8", (-1, 3)),),
    )


@pytest.fixture(scope="module")
def http() -> Iterator[TestClient]:
    """echo (strict), open (opts in to NaN and infinities), log (computes NaN), int8."""
    registry = ModelRegistry(
        [
            serve("echo", EchoRuntime(), gradient="echo.vjp"),
            serve("echo.vjp", EchoGradientRuntime(), gradient_of="echo"),
            serve("open", EchoRuntime(), gradient="open.vjp", config=OPT_IN),
            serve("open.vjp", EchoGradientRuntime(), gradient_of="open"),
            serve("log", LogRuntime(), gradient_unavailable="a fake"),
            serve("int8", Int8Runtime(), gradient_unavailable="a fake"),
        ]
    )
    with TestClient(in_process_app(registry), headers=AUTH) as client:
        yield client
    registry.close()


def wxf_list(*tokens: bytes) -> bytes:
    return b"8:f" + wxf._varint(len(tokens)) + b"s\x04List" + b"".join(tokens)


def real(value: float) -> bytes:
    return b"r" + struct.pack("<d", value)


def big(token: bytes, digits: str) -> bytes:
    return token + wxf._varint(len(digits)) + digits.encode()


def v2_json(data: object, datatype: str = "FP32", literal: str | None = None) -> bytes:
    document = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": datatype, "data": data}]}
    text = json.dumps(document)
    return text.replace('"LITERAL"', literal).encode() if literal else text.encode()


def v2_binary(values: list[float]) -> tuple[bytes, dict[str, str]]:
    return v2.encode_request({"input": np.array([values], np.float32)})


DIGITS = "9" * 5000
REFUSED = [  # (path, body, headers, the message says)
    ("/echo", b"{Indeterminate, 1., 2.}", {}, "holds NaN (Indeterminate) at [0]"),
    ("/echo", b"{{1., -Infinity, 2.}}", {}, "holds -Infinity at [0, 1]"),
    ("/echo", b"{ComplexInfinity, 1, 2}", {}, "ComplexInfinity at byte 1 is not a real number"),
    ("/echo", b"{1*^999, 1, 2}", {}, "number 1 (1*^999) is too large for a 64-bit float"),
    ("/echo", f"{{{DIGITS}, 1, 2}}".encode(), {}, "is too large for a 64-bit float"),
    ("/echo", b"{1.*^300, 1, 2}", {}, "too large for FP32"),
    ("/echo", wxf.dumps(np.array([np.nan, 1, 2])), {}, "holds NaN (Indeterminate) at [0]"),
    ("/echo", wxf.dumps(np.array([1, np.inf, 2], np.float32)), {}, "holds Infinity at [1]"),
    ("/echo", wxf_list(real(1.0), real(np.nan), real(2.0)), {}, "holds NaN"),
    ("/echo", wxf_list(big(b"R", "1.*^999"), b"C\x01", b"C\x02"), {}, "too large for a 64-bit"),
    ("/echo", wxf_list(big(b"I", DIGITS), b"C\x01", b"C\x02"), {}, "does not fit in 64 bits"),
    ("/echo", b"[1e999, 1, 2]", {}, "a number too large for a 64-bit float"),
    ("/echo", b"[NaN, 1, 2]", {}, "NaN is not a JSON number"),
    ("/echo", b'["nan", 1, 2]', {}, "found strings"),
    ("/echo", f"[{DIGITS}, 1, 2]".encode(), {}, "a number too large for a 64-bit float"),
    (
        "/echo/gradient",
        b'<|"x" -> {1., 2., 3.}, "cotangent" -> {Indeterminate, 1., 1.}|>',
        {},
        "input 'output_cotangent' holds NaN",
    ),
    ("/int8", b"[300, 1, 2]", {}, "outside -128 to 127"),
    ("/int8", b"{1.5, 1, 2}", {}, "non-integer numbers"),
    ("/int8", b"{Infinity, 1, 2}", {}, "outside -128 to 127"),
    ("/v2/models/echo/infer", v2_json([1e300, 1, 2]), {}, "too large for float32"),
    ("/v2/models/echo/infer", v2_json(["LITERAL", 1, 2], literal="NaN"), {}, "NaN is not a JSON"),
    ("/v2/models/echo/infer", v2_json(["1", 1, 2]), {}, "found strings"),
    ("/v2/models/int8/infer", v2_json([1.5, 1, 2], "INT8"), {}, "holds fractions"),
    ("/v2/models/int8/infer", v2_json([1000, 1, 2], "INT8"), {}, "outside int8's range"),
    (
        "/v2/models/echo/infer",
        *v2_binary([1.0, np.nan, 2.0]),
        "holds NaN (Indeterminate) at [0, 1]",
    ),
]


@pytest.mark.parametrize(("path", "body", "headers", "message"), REFUSED)
def test_non_finite_and_oversized_numbers_are_refused(http, path, body, headers, message):
    reply = http.post(path, content=body, headers=headers)
    assert reply.status_code == 400, reply.content[:300]
    assert message.encode() in reply.content


@pytest.mark.parametrize("path", ["/echo", "/v2/models/echo/infer"])
def test_the_refusal_says_how_to_opt_in(http, path):
    body = b"{Indeterminate, 1., 2.}" if path == "/echo" else v2_binary([np.nan, 0, 0])[0]
    headers = {} if path == "/echo" else v2_binary([0, 0, 0])[1]
    reply = http.post(path, content=body, headers=headers)
    assert b'\\"allow_nonfinite\\": true' in reply.content or b'"allow_nonfinite": true' in (
        reply.content
    )


def test_a_model_that_opts_in_takes_and_gives_nan_and_infinity(http):
    text = http.post("/open", content=b"{Indeterminate, -Infinity, 2.}")
    assert text.status_code == 200 and text.text == "{Indeterminate, -Infinity, 2.}"
    as_json = http.post(
        "/open", content=b"{Indeterminate, -Infinity, 2.}", headers={"accept": "application/json"}
    )
    assert as_json.text == "[null,null,2.0]"  # JSON has no NaN: null, never a bare NaN
    binary = http.post("/open", content=wxf.dumps(np.array([np.nan, np.inf, 1.0])))
    assert np.array_equal(wxf.loads(binary.content), [np.nan, np.inf, 1.0], equal_nan=True)
    body, headers = v2_binary([np.nan, np.inf, 1.0])
    v2_reply = http.post("/v2/models/open/infer", content=body, headers=headers)
    decoded = v2.decode_response(v2_reply.content, v2_reply.headers.get(v2.HEADER_LENGTH))
    assert np.array_equal(decoded.outputs["output"], [[np.nan, np.inf, 1.0]], equal_nan=True)


def test_an_opted_in_models_gradient_takes_nan_too(http):
    body = b'<|"x" -> {1., 2., 3.}, "cotangent" -> {Indeterminate, 1., 1.}|>'
    reply = http.post("/open/gradient", content=body)
    assert reply.status_code == 200 and reply.text == "{Indeterminate, 1., 1.}"


def test_a_result_holding_nan_is_a_clear_error_not_a_bare_nan(http):
    reply = http.post("/log", content=b"{-1., 1., 0.}")
    assert reply.status_code == 400
    assert b"computed NaN (Indeterminate) in output 'output' at [0]" in reply.content
    assert b"computed -Infinity" in http.post("/log", content=b"{1., 1., 0.}").content
    v2_reply = http.post("/v2/models/log/infer", content=v2_json([1.0, -1.0, 2.0]))
    assert v2_reply.status_code == 400
    document = json.loads(v2_reply.text, parse_constant=pytest.fail)  # strict JSON
    assert "computed NaN (Indeterminate) in output 'output' at [0, 1]" in document["error"]


INFER = "/v2/models/echo/infer"
GOOD = {"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}
HUGE = {"name": "input", "shape": [2**40] * 2, "datatype": "FP32"}
UNEXPECTED_500_BEFORE = [  # documents that were answered with a 500 before strict numbers
    {"inputs": [{**GOOD, "shape": [1] * 65, "data": [1]}]},
    {"inputs": [{**GOOD, "parameters": [1]}]},
    {"inputs": [GOOD], "outputs": [{"name": "output", "parameters": [1]}]},
    {"inputs": [GOOD], "parameters": "x"},
    {"inputs": [{**HUGE, "parameters": {"binary_data_size": True}}]},
]


@pytest.mark.parametrize("document", UNEXPECTED_500_BEFORE)
def test_malformed_v2_documents_are_400(http, document):
    reply = http.post(INFER, json=document)
    assert reply.status_code == 400, reply.text
    assert reply.json()["code"] == "PayloadError"


@pytest.mark.parametrize(
    "body",
    [
        b"{" * 100_000,
        b"{" * 40 + b"1" + b"}" * 40,
        b"[" * 2000 + b"1" + b"]" * 2000,
        b"8:\xc2\x22\x03" + wxf._varint(2**63) * 3 + bytes(16),
        b"8:\xc1\x23\x02" + wxf._varint(10**6) * 2 + bytes(16),
        b"8C:" + zlib.compress(b"\xc2\x22\x02" + wxf._varint(10**6) * 2 + bytes(1 << 16)),
    ],
    ids=[
        "bracket-bomb",
        "rank-40",
        "json-2000-deep",
        "overflowing-dims",
        "10^12-packed",
        "10^12-8C",
    ],
)
def test_hostile_shapes_are_400_before_anything_is_allocated(http, body):
    reply = http.post("/echo", content=body)
    assert reply.status_code == 400, reply.content[:300]


def test_a_compressed_body_is_decoded_off_the_event_loop(http, monkeypatch):
    body = b"8C:" + zlib.compress(wxf.dumps(np.ones((1, 3), np.float32))[2:])
    assert len(body) < 40 and wxf.WxfCodec().decode_cost(body) > INLINE_MAX_VALUES
    decode_tensor = wxf.WxfCodec.decode_tensor
    on_loop = []

    def spy(codec: wxf.WxfCodec, data: bytes) -> np.ndarray:  # any WXF codec, bounded ones too
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:
            on_loop.append(False)
        return decode_tensor(codec, data)

    monkeypatch.setattr(wxf.WxfCodec, "decode_tensor", spy)
    reply = http.post("/echo", content=body, headers=WXF_TYPE)
    assert reply.status_code == 200 and on_loop == [False]
