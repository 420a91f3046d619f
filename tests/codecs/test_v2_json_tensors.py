"""Large V2 JSON ``data`` read by simdjson (:mod:`mlbridge.codecs.json_tensors`): the same
arrays and the same errors as the plain route (orjson reads the whole body) on generated
bodies and on every error case, memory near the body, and the same answers from a real
server as its binary route gives.

"fast" runs with ``MIN_SPAN`` 0, so that every ``data`` array, however small, goes the
simdjson way; "plain" with no array large enough, so that none does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from unittest import mock

import httpx
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import traced_peak

from mlbridge.codecs import json_tensors, v2
from mlbridge.errors import PayloadError

EXAMPLES = 300  # generated bodies per property (derandomized: the same every run)
MEMORY_FACTOR = 2  # peak traced memory of decoding the 10,000-image body, times its size
IMAGES = 10_000


@contextmanager
def route(kind: str) -> Iterator[None]:
    """Decode the "fast" way (every data array through simdjson) or the "plain" way."""
    with mock.patch.object(json_tensors, "MIN_SPAN", 0 if kind == "fast" else 1 << 62):
        yield


def outcome(decode: Callable[..., Any], body: bytes, length: str | None = None) -> tuple:
    """What a decode gives, comparable exactly: each array's dtype, shape and bytes, the
    other fields, or the error's message."""
    try:
        result = decode(body, length)
    except PayloadError as error:
        return ("error", error.message)
    fields = dict(vars(result))
    tensors = fields.pop("inputs", None) or fields.pop("outputs")
    arrays = [(n, a.dtype.str, a.shape, a.tobytes()) for n, a in tensors.items()]
    return ("ok", arrays, repr(sorted(fields.items(), key=lambda item: item[0])))


def both_ways(decode: Callable[..., Any], body: bytes, length: str | None = None) -> tuple:
    """Decode fast and plain; they must agree exactly. Returns the outcome."""
    with route("plain"):
        plain = outcome(decode, body, length)
    with route("fast"):
        fast = outcome(decode, body, length)
    assert fast == plain, body[:400]
    return fast


def took_fast_route(body: bytes, section: str = "inputs") -> bool:
    return json_tensors.load_with_arrays(body, section) is not None


# --- JSON written token by token, so that bodies can hold what json.dumps never writes ---


@dataclass(frozen=True)
class Token:
    """Text written as it is: a number token, or anything else (NaN, 1., a string...)."""

    text: str


@dataclass(frozen=True)
class Obj:
    """A JSON object as (key, value) pairs: keys may repeat."""

    pairs: tuple


def dump(value: Any, style: str) -> str:
    """JSON text in one of three styles: compact, json.dumps' default, or indented."""
    comma, colon, newline = {"compact": (",", ":", ""), "spaced": (", ", ": ", "")}.get(
        style, (",\n  ", ": ", "\n")
    )
    if isinstance(value, Token):
        return value.text
    if isinstance(value, Obj):
        inner = comma.join(f"{json.dumps(k)}{colon}{dump(v, style)}" for k, v in value.pairs)
        return "{" + newline + inner + newline + "}"
    if isinstance(value, list):
        return "[" + newline + comma.join(dump(v, style) for v in value) + newline + "]"
    return json.dumps(value)


FLOATS = st.floats(allow_nan=False, allow_infinity=False).map(lambda x: Token(repr(x)))
FLOAT32S = st.floats(allow_nan=False, allow_infinity=False, width=32).map(lambda x: Token(repr(x)))
INTEGERS = st.one_of(st.integers(-300, 300), st.integers(-(2**70), 2**70)).map(
    lambda i: Token(str(i))
)
ODD_TOKENS = st.sampled_from(
    ["-0", "-0.0", "0", "1E5", "1e-400", "5e-324", "1e999", "-1e999", "1.5e308", "3.5e38",
     "3.4028235e38", "9223372036854775807", "9223372036854775808", "18446744073709551616",
     "NaN", "Infinity", "1.", ".5", "01", "+1", '"1"', "true", "false", "null", "{}", '"a,b"',
     '"]"', "[]", "[1]", "1 2", ""]
).map(Token)  # fmt: skip
NUMBERS = st.one_of(FLOATS, FLOAT32S, INTEGERS)
DATATYPES = st.sampled_from(
    ["FP32", "FP64", "FP16", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT64", "BOOL", "X"]
    + ["FP32", "FP64", "INT64"] * 3
)


@st.composite
def data_values(draw: st.DrawFn) -> tuple[Any, list[int]]:
    """Data and the shape it has: flat or nested, mostly numbers, sometimes not quite."""
    shape = draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))
    odd = draw(st.integers(0, 3)) == 0
    leaf = draw(st.sampled_from([NUMBERS, FLOATS, FLOAT32S, INTEGERS]))
    count = int(np.prod(shape))
    data: Any = draw(st.lists(st.one_of(leaf, ODD_TOKENS) if odd else leaf, min_size=count,
                              max_size=count))  # fmt: skip
    for size in reversed(shape[1:]):
        data = [data[i : i + size] for i in range(0, len(data), size)]
    defect = draw(st.sampled_from(["none"] * 6 + ["ragged", "wrapped", "empty"]))
    if defect == "ragged" and isinstance(data[-1], list):
        data[-1] = data[-1][:-1]
    elif defect == "wrapped":
        data[0] = [data[0]]
    elif defect == "empty":
        data = draw(st.sampled_from([[], [[]], [[], []]]))
    return data, shape


NAMES = st.sampled_from(["input", "x", "", 'a "data": [1, 2]', "d\\", "data"])


@st.composite
def entries(draw: st.DrawFn) -> Obj:
    data, shape = draw(data_values())
    declared = draw(
        st.sampled_from([shape] * 4 + [[int(np.prod(shape))], [*shape, 1], [1, *shape], [2], []])
    )
    pairs: list[tuple[str, Any]] = [
        ("name", draw(NAMES)),
        ("shape", declared),
        ("datatype", draw(DATATYPES)),
        ("data", data),
    ]
    if draw(st.integers(0, 9)) == 0:
        pairs.append(("parameters", Obj((("data", [Token("1"), Token("2")]),))))
    if draw(st.integers(0, 9)) == 0:
        pairs.insert(0, ("data", [Token("7")] * len(data)))  # a duplicate key: the last wins
    draw(st.randoms()).shuffle(pairs)
    return Obj(tuple(pairs))


@st.composite
def bodies(draw: st.DrawFn, section: str = "inputs") -> bytes:
    pairs: list[tuple[str, Any]] = [(section, draw(st.lists(entries(), min_size=1, max_size=3)))]
    if draw(st.booleans()):
        pairs.append(("id", draw(st.sampled_from(["7", "x", 'say "data": [3]']))))
    if section == "outputs":
        pairs.append(("model_name", "m"))
    elif draw(st.booleans()):
        pairs.append(("outputs", [Obj((("name", "y"),))]))
    body = dump(Obj(tuple(pairs)), draw(st.sampled_from(["compact", "spaced", "indented"])))
    return body.encode()


@st.composite
def mutated(draw: st.DrawFn, seeds: st.SearchStrategy[bytes]) -> bytes:
    """A body with a few bytes flipped, cut or inserted."""
    body = bytearray(draw(seeds))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(body) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            body[at] = draw(st.sampled_from(b'[]{},:." 0123456789eE-+\\xn'))
        elif action == "cut":
            del body[at : at + draw(st.integers(1, 4))]
        else:
            body[at:at] = draw(st.sampled_from([b",", b"[", b"]", b"1", b" ", b'"', b"e"]))
    return bytes(body)


def fuzz(examples: int = EXAMPLES) -> Callable:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )


# --- the properties ----------------------------------------------------------------------


@pytest.mark.slow  # seconds: CI runs it, the fast part does not
def test_generated_requests_decode_alike_both_ways() -> None:
    taken = []

    @fuzz()
    @given(bodies())
    def agree(body: bytes) -> None:
        both_ways(v2.decode_request, body)
        with route("fast"):
            taken.append(took_fast_route(body))

    agree()
    assert sum(taken) >= len(taken) // 10, f"the fast route took {sum(taken)} of {len(taken)}"


@pytest.mark.slow  # seconds: CI runs it, the fast part does not
def test_mutated_requests_decode_alike_both_ways() -> None:
    @fuzz()
    @given(mutated(bodies()))
    def agree(body: bytes) -> None:
        both_ways(v2.decode_request, body)

    agree()


def test_generated_responses_decode_alike_both_ways() -> None:
    @fuzz(EXAMPLES // 3)
    @given(bodies("outputs"))
    def agree(body: bytes) -> None:
        both_ways(v2.decode_response, body)

    agree()


def test_binary_extension_is_unchanged_beside_large_json_data() -> None:
    images = np.random.default_rng(1).random((40, 28, 28), dtype=np.float32)
    raw = np.arange(6, dtype=np.int64)
    document = {
        "inputs": [
            {"name": "a", "shape": [40, 28, 28], "datatype": "FP32", "data": images.ravel()},
            {"name": "b", "shape": [6], "datatype": "INT64", "parameters": {
                "binary_data_size": raw.nbytes}},
        ]
    }  # fmt: skip
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    assert took_fast_route(header)
    result = both_ways(v2.decode_request, header + raw.tobytes(), str(len(header)))
    assert result[0] == "ok"
    request = v2.decode_request(header + raw.tobytes(), str(len(header)))
    assert np.array_equal(request.inputs["a"], images) and np.array_equal(request.inputs["b"], raw)


# --- the common bodies take the fast route; odd ones the plain one, with the same answer --


def big_body(data: Any, shape: list[int], datatype: str = "FP32", style: str = "compact") -> bytes:
    entry = Obj((("name", "x"), ("shape", shape), ("datatype", datatype), ("data", data)))
    return dump(Obj((("inputs", [entry]),)), style).encode()


RNG = np.random.default_rng(0)
VALUES = RNG.random(3000).astype(np.float32).astype(np.float64)
FLOAT_TOKENS = [Token(repr(float(v))) for v in VALUES]
NESTED = [FLOAT_TOKENS[i : i + 100] for i in range(0, 3000, 100)]
INT_TOKENS = [Token(str(i)) for i in range(-1500, 1500)]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (big_body(FLOAT_TOKENS, [3000]), VALUES),
        (big_body(FLOAT_TOKENS, [30, 10, 10]), VALUES),
        (big_body(NESTED, [30, 100], style="spaced"), VALUES),
        (big_body(NESTED, [30, 100], style="indented"), VALUES),
        (big_body(INT_TOKENS, [3000], "INT64"), np.arange(-1500, 1500)),
        (big_body([Token("0"), *FLOAT_TOKENS[1:]], [3000]), [0.0, *VALUES[1:]]),
    ],
    ids=["flat", "flat-any-shape", "nested", "nested-indented", "int64", "int-then-floats"],
)  # fmt: skip
def test_common_bodies_take_the_fast_route(body: bytes, expected) -> None:
    assert took_fast_route(body)
    assert both_ways(v2.decode_request, body)[0] == "ok"
    request = v2.decode_request(body)
    assert np.array_equal(request.inputs["x"].ravel(), np.asarray(expected, np.float32))


NESTED_BODY = big_body(NESTED, [30, 100])


def with_token(token: str, at: int = 1234) -> list[Token]:
    return [*FLOAT_TOKENS[:at], Token(token), *FLOAT_TOKENS[at + 1 :]]


REFUSED = [  # (body, what the message says), at the default MIN_SPAN: data of 3,000 numbers
    (big_body(with_token("1e300"), [3000]), "1e+300 (value 1235) is too large for float32"),
    (big_body(with_token("1e999"), [3000]), "a number too large for a 64-bit float"),
    (big_body(with_token("NaN"), [3000]), "NaN is not a JSON number"),
    (big_body(with_token("-Infinity"), [3000]), "Infinity is not a JSON number"),
    (big_body(with_token('"1"'), [3000]), "found strings"),
    (big_body(with_token("1."), [3000]), "invalid JSON at line 1 column"),
    (big_body([*FLOAT_TOKENS, Token("")], [3000]), "invalid JSON at line 1 column"),
    (big_body(FLOAT_TOKENS, [2999]), "shape [2999] needs 2999 values; 'data' holds 3000"),
    (big_body([*NESTED[:-1], NESTED[-1][:-1]], [30, 100]), "rectangular"),
    (big_body([*NESTED[:-1], [NESTED[-1]]], [30, 100]), "rectangular"),
    (NESTED_BODY.replace(b"],[", b"]5,[", 1), "invalid JSON at line 1 column"),
    (NESTED_BODY.replace(b"],[", b"],5[", 1), "invalid JSON at line 1 column"),
    (NESTED_BODY.replace(b"],[", b"][", 1), "invalid JSON at line 1 column"),
    (NESTED_BODY.replace(b"]]", b",]]", 1), "invalid JSON at line 1 column"),
    (NESTED_BODY.replace(b":[[", b":[[[", 1).replace(b"],[", b"]],[", 1), "rectangular"),
    (big_body(with_token("1.5"), [3000], "INT8"), "'data' holds fractions; int8 takes whole"),
    (big_body([Token("1000")] * 3000, [3000], "INT8"), "outside int8's range -128 to 127"),
    (big_body([Token("18446744073709551616")] * 3000, [3000], "INT64"), "outside int64's range"),
    (big_body(INT_TOKENS, [3000], "UINT8"), "outside uint8's range 0 to 255"),
    (big_body(FLOAT_TOKENS, [3000], "FLOAT"), "unknown datatype 'FLOAT'"),
]


@pytest.mark.parametrize(("body", "message"), REFUSED)
def test_refused_bodies_say_the_same_either_way(body: bytes, message: str) -> None:
    result = both_ways(v2.decode_request, body)
    assert result[0] == "error" and message in result[1], result
    assert message in outcome(v2.decode_request, body)[1]  # at the default MIN_SPAN too


DECLINED = {  # bodies the fast route leaves to orjson, which reads them its own way
    "booleans": big_body([Token("true")] * 3000, [3000], "BOOL"),
    "integer beyond 64 bits": big_body(with_token("18446744073709551616"), [3000]),
    "unsigned 64-bit integers": big_body([Token("9223372036854775808")] * 3000, [3000], "UINT64"),
    "nesting other than the shape": big_body(NESTED, [3000]),
    "a string holding a bracket": big_body(with_token('"]"'), [3000]),
    "duplicate data keys": dump(
        Obj(
            (
                (
                    "inputs",
                    [
                        Obj(
                            (
                                ("name", "x"),
                                ("shape", [3000]),
                                ("datatype", "FP32"),
                                ("data", FLOAT_TOKENS),
                                ("data", FLOAT_TOKENS[::-1]),
                            )
                        )
                    ],
                ),
            )
        ),
        "compact",
    ).encode(),
    "data of parameters": dump(
        Obj(
            (
                (
                    "inputs",
                    [
                        Obj(
                            (
                                ("name", "x"),
                                ("shape", [1]),
                                ("datatype", "FP32"),
                                ("parameters", Obj((("data", FLOAT_TOKENS),))),
                                ("data", [Token("1")]),
                            )
                        )
                    ],
                ),
            )
        ),
        "compact",
    ).encode(),
}


@pytest.mark.parametrize("body", DECLINED.values(), ids=DECLINED.keys())
def test_odd_bodies_go_the_plain_way_with_the_same_answer(body: bytes) -> None:
    assert not took_fast_route(body)
    both_ways(v2.decode_request, body)


def test_one_image_and_small_bodies_are_read_alike() -> None:
    for count in (1, 5, 100):
        body = big_body(FLOAT_TOKENS[:count], [count])
        assert both_ways(v2.decode_request, body)[0] == "ok"


# --- memory, and a real server --------------------------------------------------------------


def mnist_like(count: int) -> np.ndarray:
    """Images like MNIST's in JSON: mostly 0.0, the rest k/255 as float32."""
    rng = np.random.default_rng(2)
    pixels = np.where(rng.random((count, 28, 28)) < 0.8, 0, rng.integers(1, 256, (count, 28, 28)))
    return (pixels / 255).astype(np.float32)


def test_big_fp32_data_is_stored_as_float32_as_it_is_read() -> None:
    """Spans longer than a parse chunk are narrowed chunk by chunk, rounded exactly as the
    plain route's cast rounds them; a value too large for float32 is named the same way."""
    values = np.random.default_rng(3).standard_normal(20_000) * 1e10  # not float32-exact
    body = big_body([Token(repr(float(v))) for v in values], [20_000])
    document = json_tensors.load_with_arrays(body, "inputs")
    assert document is not None and document["inputs"][0]["data"].dtype == np.float32
    assert both_ways(v2.decode_request, body)[0] == "ok"
    assert np.array_equal(v2.decode_request(body).inputs["x"], values.astype(np.float32))
    tokens = [Token(repr(float(v))) for v in values]
    tokens[12_345] = Token("1e39")
    status, message = both_ways(v2.decode_request, big_body(tokens, [20_000]))
    assert status == "error" and "1e+39 (value 12346) is too large for float32" in message


def test_decoding_ten_thousand_images_takes_memory_near_the_body() -> None:
    images = mnist_like(IMAGES)
    document = {"inputs": [{"name": "x", "shape": list(images.shape), "datatype": "FP32",
                            "data": images.ravel()}]}  # fmt: skip
    body = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    request, peak = traced_peak(lambda: v2.decode_request(body))
    assert np.array_equal(request.inputs["x"], images)
    assert peak <= MEMORY_FACTOR * len(body), f"{peak / len(body):.1f}x a {len(body)} byte body"


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_a_real_server_answers_large_json_as_it_answers_binary(server, nested: bool) -> None:
    images = mnist_like(500)
    data = images.tolist() if nested else images.ravel().tolist()
    document = {"inputs": [{"name": "input", "shape": [500, 28, 28], "datatype": "FP32",
                            "data": data}]}  # fmt: skip
    url = f"{server.url}/v2/models/mnist/infer"
    with httpx.Client(headers=server.auth, timeout=60) as client:
        as_json = client.post(url, content=json.dumps(document).encode())
        body, headers = v2.encode_request({"input": images})
        as_binary = client.post(url, content=body, headers=headers)
        if nested:
            data[123][4][5] = 1e300
        else:
            data[123 * 784] = 1e300
        refused = client.post(url, content=json.dumps(document).encode())
    assert as_json.status_code == 200 and as_binary.status_code == 200, as_json.text
    length = as_binary.headers.get(v2.HEADER_LENGTH)
    expected = v2.decode_response(as_binary.content, length).outputs["output"]
    assert np.array_equal(v2.decode_response(as_json.content).outputs["output"], expected)
    assert refused.status_code == 400 and "is too large for float32" in refused.json()["error"]


def test_a_big_body_the_array_route_declines_is_refused_before_orjson_reads_it() -> None:
    """Past PLAIN_JSON_MAX, a body that would cost its Python objects (up to 35x) is a 400."""
    count = v2.PLAIN_JSON_MAX // 5 + 1  # "true," per value: just over the cap
    tensor = {"name": "flags", "shape": [count], "datatype": "BOOL", "data": [True] * count}
    body = orjson.dumps({"inputs": [tensor]})
    assert len(body) > v2.PLAIN_JSON_MAX
    with pytest.raises(PayloadError, match="must carry each tensor's 'data' as an array of"):
        v2.decode_request(body)
    small = {**tensor, "shape": [1000], "data": [True] * 1000}
    assert v2.decode_request(orjson.dumps({"inputs": [small]})).inputs["flags"].all()
    numbers = {"name": "x", "shape": [2 * count], "datatype": "FP32", "data": [0.5] * 2 * count}
    big = orjson.dumps({"inputs": [numbers]})
    assert len(big) > v2.PLAIN_JSON_MAX and v2.decode_request(big).inputs["x"].size == 2 * count
