"""Property-based fuzzing of every decoder (hypothesis): any body either decodes to numbers or
raises a PayloadError (the BadRequest family), never another exception, and decoding takes
memory bounded by the body.

Each decoder gets bodies built three ways: valid ones from the encoders, the same with
bytes flipped, cut or inserted, and hostile shapes (bracket bombs, huge declared
dimensions, 5,000-digit numbers, NaN and Infinity, deep nesting, zlib bombs). The fast
suite runs :data:`FAST` examples per decoder; ``-m slow`` runs :data:`DEEP`. The
coverage-guided run (atheris) is ``tests/codecs/test_fuzz_atheris.py``.
"""

from __future__ import annotations

import json
import struct
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlbridge.codecs import cas_codecs
from mlbridge.codecs import v2 as v2_codec
from mlbridge.codecs.mathematica import MathematicaCodec, format_list
from mlbridge.codecs.wxf import WxfCodec, _varint
from mlbridge.errors import BadRequest
from mlbridge.protocol import InferenceRequest, InferenceResponse

FAST = 40  # examples per decoder in the fast suite (all of them together: a few seconds)
DEEP = 2000  # examples per decoder with -m slow, new ones each run (3,000: 6.5 min of CI)
LIMIT = 1 << 20  # the body limit the codecs are built for: 8C: inflates at most 1 MiB
CODECS = cas_codecs(max_decompressed=LIMIT)
TEXT = CODECS[MathematicaCodec.media_type]
WXF = CODECS[WxfCodec().media_type]
JSON = CODECS["application/json"]
SLACK = 512 * 1024  # bytes any decode may take beyond its factor (interpreter noise)
# Peak memory of one decode, as a multiple of the body (for 8C:, the body plus what it
# inflates to). JSON goes through orjson's Python objects: an empty list costs 56 bytes.
MEMORY_FACTOR = {"text": 16, "wxf": 16, "json": 64, "v2": 64}


@pytest.fixture(scope="module", autouse=True)
def traced() -> Iterator[None]:
    tracemalloc.start()
    yield
    tracemalloc.stop()


def fuzz(examples: int) -> Callable:
    """Hypothesis settings: the fast suite's examples are the same every run (derandomized,
    so it never flakes); the deep run draws new ones each time."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=examples <= FAST,
        suppress_health_check=list(HealthCheck),
    )


def inflated_size(body: bytes) -> int:
    """How many bytes an 8C: body inflates to (at most the limit): part of its memory bound."""
    if not body.startswith(b"8C:"):
        return 0
    return inflated_before_error(body[3:])


def inflated_before_error(payload: bytes) -> int:
    """Bytes zlib produces from ``payload`` (at most the limit), up to an error if any."""
    inflater, pending, produced = zlib.decompressobj(), payload, 0
    try:
        while produced <= LIMIT:
            chunk = inflater.decompress(pending, 1 << 16)
            pending = inflater.unconsumed_tail
            if not chunk:
                break
            produced += len(chunk)
    except zlib.error:
        pass  # a corrupt stream still inflated this much before the decoder saw the error
    return produced


def decodes_safely(kind: str, decode: Callable[[bytes], Any], body: bytes) -> Any:
    """Decode ``body``: numbers or a BadRequest, nothing else, within the memory bound."""
    bound = MEMORY_FACTOR[kind] * (len(body) + inflated_size(body)) + SLACK
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    try:
        result = decode(body)
    except BadRequest:
        result = None
    peak = tracemalloc.get_traced_memory()[1] - before
    assert peak <= bound, f"{kind} decode of {len(body)} bytes took {peak} bytes"
    for array in arrays(result):
        assert isinstance(array, np.ndarray) and array.dtype.kind in "biuf", type(array)
    return result


def arrays(result: Any) -> list[Any]:
    if result is None:
        return []
    if isinstance(result, InferenceRequest):
        return list(result.inputs.values())
    if isinstance(result, InferenceResponse):
        return list(result.outputs.values())
    return list(result.values()) if isinstance(result, dict) else [result]


# --- strategies --------------------------------------------------------------------------

REALS = st.floats(allow_nan=False, allow_infinity=False, width=32)
SHAPES = st.lists(st.integers(0, 4), min_size=0, max_size=4)
DTYPES = st.sampled_from(["float32", "float64", "int8", "int16", "int32", "int64", "uint8"])


@st.composite
def tensors(draw: st.DrawFn) -> np.ndarray:
    shape = tuple(draw(SHAPES))
    dtype = np.dtype(draw(DTYPES))
    values = draw(st.lists(st.integers(-100, 100), min_size=1, max_size=1))[0]
    array = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape) + values
    if dtype.kind == "f" and draw(st.booleans()):
        special = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e-30, 3.4e38]))
        array = array.astype(dtype)
        if array.size:
            array.flat[0] = special
    return array.astype(dtype)


@st.composite
def mutated(draw: st.DrawFn, seeds: st.SearchStrategy[bytes]) -> bytes:
    """A body, then a few random cuts, flips and insertions."""
    body = bytearray(draw(seeds))
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        at = draw(st.integers(0, max(0, len(body) - 1)))
        if action == "flip" and body:
            body[at] = draw(st.integers(0, 255))
        elif action == "cut" and body:
            del body[at : at + draw(st.integers(1, 8))]
        elif action == "insert":
            body[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif action == "truncate":
            del body[at:]
    return bytes(body)


TEXT_PIECES = st.sampled_from(
    [b"{", b"}", b",", b" ", b"\n", b"0", b"1.", b".5", b"-3", b"1.5*^-7", b"2.5`10.", b"``20",
     b"Indeterminate", b"Infinity", b"-Infinity", b"ComplexInfinity", b"1*^999", b"9" * 400,
     b"<|", b"|>", b'"x" -> ', b'"cotangent" -> ', b"e", b"nan", b"\xff"]
)  # fmt: skip


@st.composite
def text_bodies(draw: st.DrawFn) -> bytes:
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return format_list(draw(tensors()).astype(np.float64)).encode()
    if choice == 1:
        return b"".join(draw(st.lists(TEXT_PIECES, max_size=40)))
    if choice == 2:
        depth = draw(st.integers(1, 80))
        return b"{" * depth + b"1" + b"}" * draw(st.integers(0, depth + 2))
    x, dy = (format_list(draw(tensors()).astype(np.float64)) for _ in range(2))
    return f'<|"x" -> {x}, "cotangent" -> {dy}|>'.encode()


def wxf_list(values: list) -> bytes:
    """A WXF List of numbers, as Mathematica writes an unpacked list (mixed tokens)."""
    out = b"f" + _varint(len(values)) + b"s\x04List"
    for value in values:
        if isinstance(value, list):
            out += wxf_list(value)
        elif isinstance(value, float):
            out += b"r" + struct.pack("<d", value)
        elif isinstance(value, str):  # a big number's digits
            out += (b"R" if "." in value else b"I") + _varint(len(value)) + value.encode()
        else:
            out += (
                b"C" + struct.pack("<b", value)
                if -128 <= value < 128
                else b"L" + struct.pack("<q", value)
            )
    return out


LIST_VALUES = st.recursive(
    st.one_of(
        st.integers(-(2**63), 2**63 - 1),
        st.floats(),
        st.sampled_from(["9" * 5000, "1.*^999", "-12", "1.5`20*^-3", "12x"]),
    ),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=20,
)


@st.composite
def wxf_bodies(draw: st.DrawFn) -> bytes:
    choice = draw(st.integers(0, 4))
    if choice == 0:
        payload = WXF.encode_tensor(draw(tensors()))[2:]
    elif choice == 1:
        payload = wxf_list(draw(st.lists(LIST_VALUES, max_size=6)))
    elif choice == 2:  # an array header declaring dims that the body does not hold
        dims = draw(st.lists(st.integers(0, 2**64 - 1), min_size=0, max_size=20))
        code = draw(st.sampled_from([0x00, 0x22, 0x23, 0x13, 0x33, 0x05]))
        token = draw(st.sampled_from([b"\xc1", b"\xc2"]))
        payload = token + bytes([code]) + _varint(len(dims)) + b"".join(map(_varint, dims))
        payload += draw(st.binary(max_size=64))
    elif choice == 3:  # an association of x and a cotangent
        rules = [b"-S\x01x" + WXF.encode_tensor(draw(tensors()))[2:]]
        rules += [b"-S\x09cotangent" + wxf_list([draw(st.integers(-5, 5))])]
        payload = b"A" + _varint(len(rules)) + b"".join(rules)
    else:  # a zlib bomb: zeros, or one repeated token, behind a plausible header
        size = draw(st.integers(0, 4 * LIMIT))
        payload = draw(st.sampled_from([b"", b"\xc2\x22\x01" + _varint(size // 4)]))
        payload += draw(st.sampled_from([bytes(size), b"C\x00" * (size // 2)]))
        return b"8C:" + zlib.compress(payload, 9)
    if draw(st.booleans()):
        return b"8C:" + zlib.compress(payload)
    return b"8:" + payload


JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.sampled_from(["1", "nan", "abc"]),
    ),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from("xyz"), inner),
    max_leaves=20,
)


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return json.dumps(draw(tensors()).astype(np.float64).tolist()).encode()
    if choice == 1:
        return json.dumps(draw(JSON_VALUES), allow_nan=True).encode()
    if choice == 2:
        x = draw(tensors()).astype(np.float64).tolist()
        return json.dumps({"x": x, "cotangent": draw(JSON_VALUES)}, allow_nan=True).encode()
    depth = draw(st.integers(1, 1100))
    return b"[" * depth + draw(st.sampled_from([b"1", b"1e999", b"9" * 5000])) + b"]" * depth


@st.composite
def v2_entries(draw: st.DrawFn) -> dict:
    array = draw(tensors())
    entry: dict[str, Any] = {
        "name": draw(st.sampled_from(["input", "x", ""])),
        "shape": draw(st.one_of(st.just(list(array.shape)), st.lists(st.integers(-2, 2**41)))),
        "datatype": draw(st.sampled_from(["FP32", "FP64", "INT8", "UINT8", "BOOL", "FP16", "X"])),
    }
    if draw(st.booleans()):
        entry["data"] = draw(st.one_of(st.just(array.astype(np.float64).tolist()), JSON_VALUES))
    else:
        entry["parameters"] = draw(
            st.one_of(st.just({"binary_data_size": array.nbytes}), JSON_VALUES)
        )
    return entry


@st.composite
def v2_bodies(draw: st.DrawFn) -> tuple[bytes, str | None]:
    if draw(st.booleans()):
        arrays = {name: draw(tensors()) for name in draw(st.lists(st.sampled_from("abc")))}
        body, headers = v2_codec.encode_request(arrays)
        length = headers["Inference-Header-Content-Length"]
        return draw(mutated(st.just(body))), draw(st.sampled_from([length, None, "7", "x"]))
    document: dict[str, Any] = {"inputs": draw(st.lists(v2_entries(), max_size=3))}
    if draw(st.booleans()):
        document["parameters"] = draw(JSON_VALUES)
    if draw(st.booleans()):
        document["outputs"] = draw(st.one_of(JSON_VALUES, st.just([{"name": "y"}])))
    body = json.dumps(document, allow_nan=True).encode()
    return draw(mutated(st.just(body))), None


# --- the properties ----------------------------------------------------------------------


def check_text(body: bytes) -> None:
    decodes_safely("text", TEXT.decode_tensor, body)
    decodes_safely("text", TEXT.decode_arguments, body)


def check_wxf(body: bytes) -> None:
    decodes_safely("wxf", WXF.decode_tensor, body)
    decodes_safely("wxf", WXF.decode_arguments, body)


def check_json(body: bytes) -> None:
    decodes_safely("json", JSON.decode_tensor, body)
    decodes_safely("json", JSON.decode_arguments, body)


def check_v2(case: tuple[bytes, str | None]) -> None:
    body, length = case
    decodes_safely("v2", lambda b: v2_codec.decode_request(b, length), body)
    decodes_safely("v2", lambda b: v2_codec.decode_response(b, length), body)


TEXT_CASES = st.one_of(text_bodies(), mutated(text_bodies()))
WXF_CASES = st.one_of(wxf_bodies(), mutated(wxf_bodies()))
JSON_CASES = st.one_of(json_bodies(), mutated(json_bodies()))
PROPERTIES = [
    ("text", TEXT_CASES, check_text),
    ("wxf", WXF_CASES, check_wxf),
    ("json", JSON_CASES, check_json),
    ("v2", v2_bodies(), check_v2),
]


@pytest.mark.parametrize(("name", "cases", "check"), PROPERTIES, ids=[p[0] for p in PROPERTIES])
def test_decoders_answer_numbers_or_payload_errors(name, cases, check) -> None:
    fuzz(FAST)(given(cases)(lambda case: check(case)))()


@pytest.mark.slow
@pytest.mark.parametrize(("name", "cases", "check"), PROPERTIES, ids=[p[0] for p in PROPERTIES])
def test_decoders_deeply(name, cases, check) -> None:
    fuzz(DEEP)(given(cases)(lambda case: check(case)))()


def test_text_fast_and_strict_paths_agree_on_generated_lists() -> None:
    """The vectorised path and the step-by-step parser read every valid list alike."""
    from mlbridge.codecs.mathematica import _parse_strictly, parse_list

    @fuzz(FAST)
    @given(tensors().filter(lambda array: array.ndim and array.size))  # what text can write
    def agree(array: np.ndarray) -> None:
        finite = np.nan_to_num(array.astype(np.float64), posinf=1.0, neginf=-1.0)
        text = format_list(finite).encode()
        fast, strict = parse_list(text), _parse_strictly(text)
        assert fast.shape == strict.shape == finite.shape
        assert np.array_equal(fast, strict) and np.array_equal(fast, finite)

    agree()


REGRESSIONS = [  # (decoder, body): inputs the fuzzers found that once raised another exception
    (TEXT.decode_arguments, b'<|"x" ->, "cotangent" -> { 2.*^-7}|>'),  # atheris: ValueError
    (TEXT.decode_arguments, b'<|"x" -> 1, 2|>'),
    (TEXT.decode_tensor, b"{{}, {}}"),
]
V2_REGRESSIONS = [  # hypothesis: an empty tensor whose other axes overflow numpy (ValueError)
    b'{"inputs": [{"name": "x", "shape": [0, 1099511627776, 1099511627776], '
    b'"datatype": "FP32", "data": []}]}',
]


@pytest.mark.parametrize(("decode", "body"), REGRESSIONS)
def test_inputs_the_fuzzers_found(decode, body) -> None:
    decodes_safely("text", decode, body)


@pytest.mark.parametrize("body", V2_REGRESSIONS)
def test_v2_inputs_the_fuzzers_found(body) -> None:
    check_v2((body, None))


def test_empty_arrays_are_written_as_text_they_read_back_as() -> None:
    """Found by hypothesis: a reply of shape (3, 0) once failed to be written."""
    for shape in [(0,), (3, 0), (2, 3, 0)]:
        text = format_list(np.zeros(shape)).encode()
        assert TEXT.decode_tensor(text).shape == shape
