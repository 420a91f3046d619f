"""JSON nested arrays on the CAS routes (R, Octave, shells): round trips, arguments, errors."""

from __future__ import annotations

import json
import random
from unittest import mock

import numpy as np
import orjson
import pytest
from support import traced_peak

from mlbridge.codecs import CAS_CODECS, codec_for_body, codec_for_reply
from mlbridge.codecs.json_list import DIRECT_MIN, JsonListCodec
from mlbridge.codecs.mathematica import MathematicaCodec
from mlbridge.codecs.v2 import PLAIN_JSON_MAX
from mlbridge.codecs.wxf import WxfCodec
from mlbridge.errors import PayloadError, ShapeMismatch

CODEC = JsonListCodec()

ROUND_TRIPS = [
    np.array(2.5),
    np.array([1.0, -2.0, 0.5]),
    np.array([[0.0, 0.5], [1.0, 0.25]]),
    np.arange(24, dtype=np.float64).reshape(2, 3, 4),
    np.zeros((1, 0)),  # (0, 3) cannot survive: JSON writes it as []
    np.array([1e-300, 1e300, -0.0]),
    np.random.default_rng(0).random((5, 7), dtype=np.float32),
    np.array([[1, 2], [3, 4]], np.int64),
]


@pytest.mark.parametrize("array", ROUND_TRIPS, ids=lambda a: f"{a.dtype}{list(a.shape)}")
def test_encode_then_decode_gives_the_same_numbers(array: np.ndarray) -> None:
    decoded = CODEC.decode_tensor(CODEC.encode_tensor(array))
    assert decoded.dtype == np.float64 and decoded.shape == array.shape
    assert np.array_equal(decoded.astype(array.dtype), array)


def test_replies_are_compact_json() -> None:
    assert CODEC.encode_tensor(np.array([[1.5, 2.0]], np.float32)) == b"[[1.5,2.0]]"


DECODED = [
    (b"[1, 2, 3]", [1.0, 2.0, 3.0]),
    (b"[[1, 2.5], [3e2, -4E-1]]", [[1.0, 2.5], [300.0, -0.4]]),
    (b" 7", 7.0),
    (b"[]", []),
]


@pytest.mark.parametrize(("body", "expected"), DECODED)
def test_decodes_json_numbers(body: bytes, expected) -> None:
    assert CODEC.decode_tensor(body).tolist() == expected


MALFORMED = [
    (b"[[1, 2], [3]]", "the body: expected a number or a rectangular nested JSON array"),
    (b'["a", 1]', "the body: expected a number or a rectangular nested JSON array"),
    (b"[1, 2", "invalid JSON at line 1 column 6"),
    (b"[NaN]", "NaN is not a JSON number"),
    (b"[Infinity]", "Infinity is not a JSON number"),
    (b"\xff[1]", "the body is not UTF-8 text"),
    (b"[" * 100_000 + b"]" * 100_000, "arrays nested too deeply"),
]


@pytest.mark.parametrize(("body", "message"), MALFORMED)
def test_malformed_bodies_say_what_is_wrong(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError) as caught:
        CODEC.decode_tensor(body)
    assert message in caught.value.message


def test_arguments_come_as_an_object_or_a_bare_tensor() -> None:
    arguments = CODEC.decode_arguments(b'{"x": [2, 4, 8], "cotangent": 1}')
    assert sorted(arguments) == ["cotangent", "x"]
    assert arguments["x"].tolist() == [2.0, 4.0, 8.0] and arguments["cotangent"].tolist() == 1.0
    assert CODEC.decode_arguments(b"[[1, 2]]")["x"].tolist() == [[1.0, 2.0]]


def test_an_argument_that_is_not_numbers_is_named() -> None:
    with pytest.raises(PayloadError, match=r"^'cotangent': expected a number"):
        CODEC.decode_arguments(b'{"x": [1], "cotangent": "ones"}')


def test_errors_are_json_with_status_and_code() -> None:
    reply = json.loads(CODEC.encode_error(ShapeMismatch("shape [3] expected")))
    assert reply == {"error": "shape [3] expected", "code": "ShapeMismatch", "status": 400}


@pytest.mark.parametrize(
    ("body", "sniffed"),
    [(b"[1]", True), (b'{"x": [1]}', True), (b'{ "x": 1}', True), (b"{1, 2}", False), (b"", False)],
)
def test_sniffs_arrays_and_objects_but_not_mathematica_lists(body: bytes, sniffed: bool) -> None:
    assert CODEC.sniff(body) is sniffed


NEGOTIATION = [
    ("", b"[1, 2]", "", JsonListCodec),
    ("application/x-www-form-urlencoded", b"{1, 2}", "", MathematicaCodec),
    ("application/json", b"{1, 2}", "", MathematicaCodec),  # the body wins over the label
    ("application/json", b"", "", JsonListCodec),  # an empty body: the label decides
    ("", b"8:\x00", "", WxfCodec),
    ("text/plain", b"{1}", "application/json", JsonListCodec),  # Accept chooses the reply
    ("", b"[1]", "application/vnd.wolfram.wxf;q=0.9, */*", WxfCodec),
    ("", b"[1]", "text/html", JsonListCodec),  # an unknown Accept: the request's format
]


@pytest.mark.parametrize(("content_type", "body", "accept", "reply"), NEGOTIATION)
def test_the_reply_format_is_negotiated(content_type, body, accept, reply) -> None:
    codec = codec_for_reply(accept, codec_for_body(content_type, body, CAS_CODECS), CAS_CODECS)
    assert isinstance(codec, reply)


def _outcome(decode, body: bytes):
    try:
        return decode(body)
    except PayloadError as error:
        return str(error)


def test_big_bodies_read_directly_equal_the_plain_route() -> None:
    """Bodies of DIRECT_MIN bytes or more skip orjson's objects; the answers must not change."""
    codec = JsonListCodec()
    rng = random.Random(2)
    spellings = ["0.5", "-1", "1e-7", "2E+3", "0", "-0.0", "123456789", "1.7976931348623157e308",
                 "+1", "01", "1.", "true", "\"1\"", "1e999", "[]"]  # fmt: skip
    direct = 0
    for _ in range(300):
        rows, columns = rng.randint(1, 10), rng.randint(1, 60)
        pool = spellings[: rng.choice([8, 8, len(spellings)])]
        cells = [[rng.choice(pool) for _ in range(columns)] for _ in range(rows)]
        if rng.random() < 0.1 and rows > 1:
            cells[-1] = cells[-1][:-1] or ["1"]  # ragged
        body = ("[" + ", ".join("[" + ",".join(row) + "]" for row in cells) + "]").encode()
        body = body.rjust(DIRECT_MIN)
        with mock.patch("mlbridge.codecs.json_list.DIRECT_MIN", 1 << 62):
            plain = _outcome(codec.decode_tensor, body)
        fast = _outcome(codec.decode_tensor, body)
        if isinstance(plain, str):
            assert fast == plain, body
            continue
        assert isinstance(fast, np.ndarray) and fast.dtype == plain.dtype, body
        np.testing.assert_array_equal(fast, plain)
        direct += codec._read_directly(body) is not None
    assert direct > 100


def test_a_big_json_list_costs_memory_near_its_size_and_an_odd_one_is_refused() -> None:
    codec = JsonListCodec()
    images = np.random.default_rng(0).random((2_000, 28, 28), dtype=np.float32)
    body = orjson.dumps(images, option=orjson.OPT_SERIALIZE_NUMPY)
    array, peak = traced_peak(lambda: codec.decode_tensor(body))
    assert array.dtype == np.float64 and np.array_equal(array.astype(np.float32), images)
    assert peak < 4 * len(body), f"peak {peak / len(body):.1f}x the body"
    odd = b"[" + b"true," * (PLAIN_JSON_MAX // 5) + b"true]"
    with pytest.raises(PayloadError, match="must be a rectangular nested array of numbers"):
        codec.decode_tensor(odd)
