"""Mathematica list text: the forms InputForm writes, exact float32 round trips, clear errors."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from mlbridge.codecs import mathematica
from mlbridge.codecs.json_tensors import flat_numbers
from mlbridge.codecs.mathematica import (
    MathematicaCodec,
    _json_spelling,
    _parse_strictly,
    _read_as_json,
    format_list,
    parse_list,
)
from mlbridge.errors import PayloadError, ShapeMismatch

PARSED = [
    (b"{1, 2, 3}", [1, 2, 3]),
    (b"{{1., .5}, {-3, 1.5*^-7}}", [[1.0, 0.5], [-3.0, 1.5e-7]]),
    (b"{2.5`10., 3.`}", [2.5, 3.0]),
    (b"{1.25``20, -2.*^3}", [1.25, -2000.0]),
    (b"{3.`30*^-10}", [3e-10]),
    (b"\n {\t{1,\r\n 2}, {3,4} }\n", [[1, 2], [3, 4]]),
    (b"{+1, -0.}", [1.0, -0.0]),
    (b"{{{1}}, {{2}}}", [[[1]], [[2]]]),
    (b"{}", []),
]

MALFORMED = [
    (b"", "empty body"),
    (b"   \n", "empty body"),
    (b"garbage", "unexpected character 'g' at byte 0"),
    (b"{{1,2},{3}}", "ragged lists at depth 2: lengths 2 and 1"),
    (b"{{1,2},{3,x}}", "unexpected character 'x' at byte 10"),
    (b"{1 2}", "separate numbers with commas"),
    (b"{1,,2}", "separate numbers with commas"),
    (b"{1.2.3, 4}", "'1.2.3' (number 1) is not a number"),
    (b"{1-2, 4}", "'1-2' (number 1) is not a number"),
    (b"{*^5}", "'*^5' (number 1) is not a number"),
    (b"{{1,2},{3,4}", "1 '{' never closed"),
    (b"{1,2}}", "unexpected text after the list closes"),
    (b"{1,2}{3}", "unexpected text after the list closes"),
    (b"{1,{2}}", "mix numbers and lists"),
    (b"{{1},2}", "mix numbers and lists"),
    (b"1, 2", "expected a list in braces"),
    (b"{1.5e-7}", "unexpected character 'e'"),
    (b"{nan, inf}", "unexpected character 'n'"),
    (b"{ComplexInfinity}", "ComplexInfinity at byte 1 is not a real number"),
    (b"{1*^999, 2}", "number 1 (1*^999) is too large for a 64-bit float"),
    ("{1, 2, \u00e9}".encode(), "unexpected character"),
    (b"{` 4}", "is not a number"),
    (b"{8 `32}", "'`32' (number 2) is not a number"),
    (b"{{1,2}3,{4,5}}", "found 5 numbers where the commas and braces make room for 4"),
]


@pytest.mark.parametrize(("body", "expected"), PARSED)
def test_parses_inputform_numbers(body: bytes, expected: list) -> None:
    parsed = parse_list(body)
    assert parsed.tolist() == expected
    assert parsed.shape == np.asarray(expected, dtype=float).shape


@pytest.mark.parametrize(("body", "message"), MALFORMED)
def test_malformed_text_names_the_problem(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=None) as caught:
        parse_list(body)
    assert message in caught.value.message


FLOAT32_EDGES = np.array(
    [0.1, 1.0, 1e-5, -2.5e-7, 3e20, 123456.7, 0.0, -0.0, 1e-45, 3.4028235e38, 1 / 3, 0.99999994],
    dtype=np.float32,
)


def test_float32_values_round_trip_exactly() -> None:
    text = format_list(FLOAT32_EDGES).encode()
    assert np.array_equal(parse_list(text).astype(np.float32), FLOAT32_EDGES)


def test_random_float32_round_trip(mnist) -> None:
    values = np.random.default_rng(1).standard_normal((50, 10)).astype(np.float32) * 1e-3
    assert np.array_equal(parse_list(format_list(values).encode()).astype(np.float32), values)
    image = mnist[0][0]
    assert np.array_equal(parse_list(format_list(image).encode()).astype(np.float32), image)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1."),
        (1e-4, "0.0001"),
        (1e-5, "0.00001"),
        (1e-7, "1.*^-7"),
        (-2.5e-7, "-2.5*^-7"),
        (3e20, "3.*^20"),
        (0.1, "0.1"),
    ],
)
def test_reals_use_mathematica_notation(value: float, text: str) -> None:
    assert format_list(np.array([value], dtype=np.float32)) == "{" + text + "}"


def test_never_python_exponent_notation() -> None:
    text = format_list(np.geomspace(1e-30, 1e30, 61, dtype=np.float32))
    assert "e" not in text and "*^-30" in text


def test_float64_values_round_trip_exactly_at_every_magnitude() -> None:
    rng = np.random.default_rng(2)
    values = rng.standard_normal(400) * np.geomspace(1e-300, 1e300, 400)
    values = np.concatenate([values, [5e-324, -0.0, 1.7976931348623157e308, 1 / 3]])
    text = format_list(values)
    assert "e" not in text and np.array_equal(parse_list(text.encode()), values)


def test_what_orjson_cannot_write_is_written_word_by_word() -> None:
    assert format_list(np.array([np.nan, np.inf, -np.inf, 1.0])) == (
        "{Indeterminate, Infinity, -Infinity, 1.}"
    )
    assert format_list(np.array([0.5, 2.0], np.float16)) == "{0.5, 2.}"
    assert format_list(np.array([True, False])) == "{1, 0}"
    assert format_list(np.float32(2.5)) == "2.5"
    assert format_list(np.zeros((2, 0))) == "{{}, {}}"


def test_integers_and_nesting() -> None:
    assert format_list(np.array([[1, -2], [3, 4]])) == "{{1, -2}, {3, 4}}"


def test_error_is_a_failure_expression() -> None:
    error = ShapeMismatch('expects "input" [28, 28]')
    text = MathematicaCodec().encode_error(error).decode()
    assert text == (
        'Failure["MLBridge", <|"MessageTemplate" -> "expects \\"input\\" [28, 28]", '
        '"Status" -> 400, "Code" -> "ShapeMismatch"|>]'
    )


@pytest.mark.slow  # seconds: CI runs it, the fast part does not
def test_fast_path_agrees_with_the_strict_parser_on_random_bodies() -> None:
    """Whatever the fast path accepts, the step-by-step parser accepts alike, and vice versa."""
    rng = random.Random(0)
    alphabet = b"{},0123456789.-+*^` \n\tex"

    def outcome(parse, body: bytes):
        try:
            return parse(body)
        except PayloadError:
            return None

    accepted = 0
    for _ in range(20_000):
        body = b"{" + bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 24))) + b"}"
        fast, strict = outcome(parse_list, body), outcome(_parse_strictly, body)
        assert (fast is None) == (strict is None), body
        if fast is not None:
            accepted += 1
            assert fast.shape == strict.shape and np.array_equal(fast, strict), body
    assert accepted > 500  # the alphabet makes enough valid bodies to mean something


# The first 13 read as JSON once fixed up; the rest take numpy's route or are errors.
NUMBER_SPELLINGS = ["0.", "-0.", ".5", "-.5", "1.5*^-7", "2.*^3", "7", "-12", "0.25", "3.*^-2",
                    "1.7976931348623157*^308", "4.9*^-324", "123456789012345678", "+1", "1.2.3",
                    "1e5", "007", "2.5`10.", "- 1", "1-2", "1*^999"]  # fmt: skip


def test_the_json_route_reads_inputform_numbers_as_numpy_does() -> None:
    """Large bodies go through simdjson (``_read_as_json``); whatever it accepts must equal
    the step-by-step parser's result, and what it declines falls back with the same errors."""
    rng = random.Random(1)
    taken = 0
    for _ in range(400):
        rows, columns = rng.randint(1, 12), rng.randint(1, 40)
        spellings = NUMBER_SPELLINGS[: rng.choice([13, 13, 16, len(NUMBER_SPELLINGS)])]
        cells = [[rng.choice(spellings) for _ in range(columns)] for _ in range(rows)]
        separator = rng.choice([", ", ",", " , "])
        body = ("{" + separator.join("{" + separator.join(r) + "}" for r in cells) + "}").encode()
        if len(body) < 512:
            body = b" " * (512 - len(body)) + body
        fast = strict = None
        try:
            fast = parse_list(body)
        except PayloadError as error:
            fast = str(error)
        try:
            strict = _parse_strictly(body.strip())
        except PayloadError as error:
            strict = str(error)
        if isinstance(fast, str) or isinstance(strict, str):
            assert isinstance(fast, str) and isinstance(strict, str), body
            continue
        assert fast.shape == strict.shape and np.array_equal(fast, strict), body
        assert np.array_equal(np.signbit(fast), np.signbit(strict)), body  # -0. stays -0.
        taken += _read_as_json(body.strip()) is not None
    assert taken > 100  # the route is really exercised


def test_a_typical_inputform_body_takes_the_json_route() -> None:
    body = format_list(np.random.default_rng(0).random((20, 28), dtype=np.float32)).encode()
    body = body.replace(b"0.", b".", 5) + b" "  # some bare-point spellings too
    values = _read_as_json(body.strip())
    assert values is not None and values.dtype == np.float64
    np.testing.assert_array_equal(values.reshape(20, 28), _parse_strictly(body.strip()))


def test_inputform_spacing_is_spelled_as_json_without_growing_the_text() -> None:
    """InputForm's ", " after a bare point and its *^ exponents take the replacements of
    equal length (the fast spelling); the values are the strict parser's, bit for bit."""
    values = np.array([[0.0, -0.0, 1e-7, 1e7, 2.5e-7, 2.5e7], [3.0, -1e-300, 0.5, 1e300, 7, 8]])
    body = format_list(values).encode() + b" " * 512
    assert b"*^-" in body and b"., " in body and b".}" in body
    spelled = _json_spelling(body.strip())
    assert len(spelled) == len(body.strip())
    fast = flat_numbers(spelled, 0, len(spelled))
    assert fast is not None
    strict = _parse_strictly(body.strip()).ravel()
    assert np.array_equal(fast, strict) and np.array_equal(np.signbit(fast), np.signbit(strict))


def test_a_bounded_codec_refuses_more_numbers_than_the_model_can_take() -> None:
    codec = MathematicaCodec()
    bounded = codec.bounded(6)
    assert codec.bounded(codec.max_values) is codec and bounded.max_values == 6
    assert bounded.decode_tensor(b"{{1, 2, 3}, {4, 5, 6}}").shape == (2, 3)
    with pytest.raises(PayloadError, match="holds 9 numbers; at most 6 are accepted here"):
        bounded.decode_tensor(b"{{1, 2, 3}, {4, 5, 6}, {7, 8, 9}}")
    assert codec.decode_tensor(b"{{1, 2, 3}, {4, 5, 6}, {7, 8, 9}}").shape == (3, 3)


def test_the_skeletons_pair_counts_agree_on_both_routes(monkeypatch) -> None:
    """bytes.count for a small skeleton, numpy in chunks for a big one: the same counts."""
    rng = np.random.default_rng(7)
    skeleton = bytes(rng.choice(list(b"{},x"), size=5_000).astype(np.uint8))
    expected = tuple(skeleton.count(pair) for pair in (b"}x", b"x{", b"{x", b",x"))
    assert len(skeleton) <= mathematica.SMALL_SKELETON
    assert mathematica._pair_counts(skeleton) == expected
    monkeypatch.setattr(mathematica, "SMALL_SKELETON", 0)
    monkeypatch.setattr(mathematica, "CHUNK", 1_000)  # several chunks, pairs across their seams
    assert mathematica._pair_counts(skeleton) == expected


# --- small lists: one parse of the text spelled as nested JSON (change 16) ----------------

# What InputForm writes for reals and integers (no bare leading point, no negative zero).
INPUTFORM_SPELLINGS = [
    "0.",
    "0.25",
    "-0.5",
    "1.5*^-7",
    "2.*^3",
    "7",
    "-12",
    "3.*^-2",
    "1.7976931348623157*^308",
    "4.9*^-324",
    "123456789012345678",
    "0.99215686",
]
DEFECTS = ["none"] * 4 + ["number after a brace", "number before a brace", "empty slot",
                          "two numbers in a slot", "ragged", "extra nesting"]  # fmt: skip


def small_body(rng: random.Random, spellings: list[str]) -> tuple[bytes, str]:
    """A list of 512 bytes or more as InputForm spaces it, perhaps with one defect."""
    rows, columns = rng.randint(2, 12), rng.randint(20, 40)
    cells = [[rng.choice(spellings) for _ in range(columns)] for _ in range(rows)]
    defect = rng.choice(DEFECTS)
    if defect == "empty slot":
        cells[0][1] = ""
    elif defect == "two numbers in a slot":
        cells[0][1] = "1. 2."
    elif defect == "ragged":
        cells[-1] = cells[-1][:-1]
    elif defect == "extra nesting":
        cells[0][0] = "{" + cells[0][0] + "}"
    text = "{" + ", ".join("{" + ", ".join(row) + "}" for row in cells) + "}"
    if defect == "number after a brace":
        text = text.replace("}, {", "} 5., {", 1)
    elif defect == "number before a brace":
        text = text.replace("}, {", "}, 5. {", 1)
    return text.encode(), defect


def outcome(parse, body: bytes) -> np.ndarray | str:
    try:
        return parse(body)
    except PayloadError as error:
        return str(error)


def test_small_lists_read_in_one_parse_as_the_strict_parser_reads_them() -> None:
    """Whatever the one-parse route reads equals the strict parser's result, bit for bit
    (-0. keeps its sign: the route leaves it to the general way); every defect that the
    general way's pair counts catch is an error either way, with the same message."""
    rng = random.Random(3)
    taken = Counter()
    for _ in range(600):
        spellings = rng.choice(
            [INPUTFORM_SPELLINGS] * 3 + [NUMBER_SPELLINGS[:13], NUMBER_SPELLINGS]
        )
        body, defect = small_body(rng, spellings)
        fast, strict = outcome(parse_list, body), outcome(_parse_strictly, body)
        if isinstance(fast, str) or isinstance(strict, str):
            assert fast == strict, body
        else:
            assert fast.shape == strict.shape and np.array_equal(fast, strict), body
            assert np.array_equal(np.signbit(fast), np.signbit(strict)), body
        if mathematica._read_small(body, 1 << 30) is not None:
            taken[defect] += 1
    assert taken["none"] > 100, taken  # the route is really exercised
    assert set(taken) == {"none"}, taken  # and takes no defective list


def test_a_typical_image_takes_the_one_parse_route() -> None:
    image = np.random.default_rng(4).random((28, 28), dtype=np.float32)
    image[image < 0.6] = 0  # mostly 0., as MNIST's pixels
    body = format_list(image).encode()
    assert b"0., " in body and b".}" in body
    values = mathematica._read_small(body, 1 << 30)
    assert values is not None and values.dtype == np.float64
    assert np.array_equal(values.astype(np.float32), image)  # float32 digits, read as float64
    assert np.array_equal(values, _parse_strictly(body))


@pytest.mark.parametrize(
    "body",
    [b"{" + b", ".join([b"-0."] + [b"0.5"] * 200) + b"}",  # negative zero: its sign
     b"{" + b", ".join([b"2.5`10."] + [b"0.5"] * 200) + b"}",  # a precision mark
     b"{" + b", ".join([b"1*^999"] + [b"0.5"] * 200) + b"}",  # too large for a double
     b"{" + b", ".join([b"0.5"] * 50) + b"}",  # under JSON_ROUTE_MIN
     b"{" + b",".join([b"0."] + [b"0.5"] * 200) + b"}"],  # compact: 0.,0.5 is not JSON so spelled
    ids=["negative-zero", "precision", "overflow", "short", "compact"],
)  # fmt: skip
def test_lists_the_one_parse_route_leaves_to_the_general_way(body: bytes) -> None:
    assert mathematica._read_small(body, 1 << 30) is None
    fast, strict = outcome(parse_list, body), outcome(_parse_strictly, body)
    if isinstance(strict, str):
        assert fast == strict
    else:
        assert np.array_equal(fast, strict) and np.array_equal(np.signbit(fast), np.signbit(strict))


def test_the_one_parse_route_counts_numbers_before_reading_them() -> None:
    body = b"{" + b", ".join([b"0.5"] * 300) + b"}"
    with pytest.raises(PayloadError, match="holds 300 numbers; at most 100 are accepted"):
        MathematicaCodec().bounded(100).decode_tensor(body)
