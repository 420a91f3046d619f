"""KServe V2 JSON and binary tensor extension: decode, encode, and precise errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlbridge.codecs import v2
from mlbridge.errors import PayloadError
from mlbridge.protocol import InferenceResponse


def body(*inputs: dict, **extra) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def test_flat_and_nested_data_decode_alike() -> None:
    flat = v2.decode_request(
        body({"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]})
    )
    nested = v2.decode_request(
        body({"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]})
    )
    assert flat.inputs["x"].dtype == np.float32
    assert np.array_equal(flat.inputs["x"], nested.inputs["x"])


def test_binary_inputs_follow_the_json_header() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([7, -8], dtype=np.int64)
    header = body(
        {
            "name": "a",
            "shape": [2, 3],
            "datatype": "FP32",
            "parameters": {"binary_data_size": a.nbytes},
        },
        {
            "name": "b",
            "shape": [2],
            "datatype": "INT64",
            "parameters": {"binary_data_size": b.nbytes},
        },
        outputs=[{"name": "y", "parameters": {"binary_data": True}}],
    )
    request = v2.decode_request(header + a.tobytes() + b.tobytes(), str(len(header)))
    assert np.array_equal(request.inputs["a"], a)
    assert np.array_equal(request.inputs["b"], b)
    assert request.outputs == ["y"] and request.binary_outputs == {"y"}


def test_response_json_and_binary() -> None:
    out = np.array([[0.5, -1.25]], dtype=np.float32)
    response = InferenceResponse("m", {"y": out}, id="7")
    text, headers = v2.encode_response(response, set())
    assert headers == {"content-type": "application/json"}
    assert json.loads(text) == {
        "model_name": "m",
        "id": "7",
        "outputs": [{"name": "y", "shape": [1, 2], "datatype": "FP32", "data": [0.5, -1.25]}],
    }
    raw, headers = v2.encode_response(response, {"*"})
    length = int(headers[v2.HEADER_LENGTH])
    entry = json.loads(raw[:length])["outputs"][0]
    assert entry["parameters"] == {"binary_data_size": 8}
    assert np.array_equal(np.frombuffer(raw[length:], "<f4").reshape(1, 2), out)


MALFORMED = [
    (b"{not json", None, "invalid JSON at line 1 column 2"),
    (
        b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [NaN]}]}',
        None,
        "NaN is not a JSON number",
    ),
    (b"[]", None, 'expected a JSON object with an "inputs" list'),
    (b"[" * 100_000, None, "nested too deeply"),
    (body({"shape": [1], "datatype": "FP32", "data": [1]}), None, "missing string field 'name'"),
    (
        body({"name": "x", "shape": [2], "datatype": "FP32", "data": [1]}),
        None,
        "shape [2] needs 2 values; 'data' holds 1",
    ),
    (
        body({"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}),
        None,
        "'shape' must be a list of integers from 0 to",
    ),
    (
        body({"name": "x", "shape": [1], "datatype": "FLOAT", "data": [1]}),
        None,
        "unknown datatype 'FLOAT'",
    ),
    (
        body({"name": "x", "shape": [1], "datatype": "FP32", "data": ["a"]}),
        None,
        "'data' must be a flat or nested list of float32 numbers",
    ),
    (body({"name": "x", "shape": [1], "datatype": "FP32"}), None, "missing 'data'"),
    (
        body({"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}})
        + b"1234",
        "91",
        "the binary section ends before this tensor's 8 bytes",
    ),
    (b"{}", "999", "inference-header-content-length is 999; the body has 2 bytes"),
    (b"{}", "abc", "must be an integer"),
]


@pytest.mark.parametrize(("payload", "header_length", "message"), MALFORMED)
def test_malformed_requests_say_what_is_wrong(payload, header_length, message) -> None:
    if header_length == "91":
        header_length = str(payload.index(b"1234"))
    with pytest.raises(PayloadError) as caught:
        v2.decode_request(payload, header_length)
    assert message in caught.value.message


@pytest.mark.parametrize(
    "shape",
    [[2**32, 2**32], [2**62, 4], [0, 2**63], [10**30]],
    ids=["wrap", "wrap4", "zero", "huge"],
)
def test_absurd_shapes_are_refused_without_allocating(shape) -> None:
    for size in (0, 8, None):  # a wrapped product of 0 must not pass for empty data either
        tensor = {"name": "x", "shape": shape, "datatype": "FP32"}
        tensor.update({"data": [1.0, 2.0][: size or 0]} if size is None else {})
        tensor.update({} if size is None else {"parameters": {"binary_data_size": size}})
        header = body(tensor)
        binary = size is not None
        payload, length = (header + bytes(size), str(len(header))) if binary else (header, None)
        with pytest.raises(PayloadError):
            v2.decode_request(payload, length)


@pytest.mark.parametrize(
    "values",
    [
        [0.5, -1.0, 1e30],  # cleared by the byte screen: cast at once
        [3.4e38, -1e34, 2.0**113],  # near FP32's limit: numpy's checked cast
    ],
)
def test_fp32_json_numbers_are_cast_as_numpy_casts_them(values) -> None:
    body = json.dumps(
        {"inputs": [{"name": "x", "shape": [len(values)], "datatype": "FP32", "data": values}]}
    ).encode()
    array = v2.decode_request(body).inputs["x"]
    assert array.dtype == np.float32
    assert array.tobytes() == np.array(values).astype(np.float32).tobytes()


def test_an_fp32_json_number_beyond_its_range_is_named() -> None:
    data = {"name": "x", "shape": [3], "datatype": "FP32", "data": [1.0, 3.5e38, 2.0]}
    with pytest.raises(PayloadError, match=r"3.5e\+38 \(value 2\) is too large for float32"):
        v2.decode_request(json.dumps({"inputs": [data]}).encode())
