"""Mathematica list text: ``{{0., .5, 1.5*^-7}, ...}`` in, ``{...}`` out.

Parsing runs in C-speed passes over the whole text: bytes.translate makes
a skeleton of braces and commas that one comparison checks against the
rectangular shape it suggests, and numpy reads all numbers in one call. A
body that fails any check is parsed again step by step, only to say what is
wrong and where.
"""

from __future__ import annotations

import re
import warnings
from functools import lru_cache
from math import prod

import numpy as np

from ..errors import MLBridgeError, PayloadError
from .base import FAILURE_TAG, CasCodec, failure_fields

OPEN, CLOSE, COMMA = ord("{"), ord("}"), ord(",")
WHITESPACE = b" \t\r\n"
NUMBER_BYTES = b"0123456789.+-*^`"
# Precision or accuracy marks: 2.5`10. or 2.5``20 (the mark is dropped, the value kept).
PRECISION_MARK = re.compile(rb"(?<=[0-9.])``?[0-9.]*")
MAX_RANK = 32
ASSOCIATION_KEY = re.compile(rb'(?<=[<|,])\s*"([A-Za-z][A-Za-z0-9_]*)"\s*->')

_ALLOWED = np.zeros(256, dtype=bool)
_ALLOWED[list(WHITESPACE + NUMBER_BYTES + b"{},")] = True
_SEPARATOR = np.zeros(256, dtype=bool)
_SEPARATOR[list(WHITESPACE + b"{},")] = True
_BLANK_STRUCTURE = bytes.maketrans(b"{},", b"   ")
# For the skeleton: number characters become x, braces and commas stay, anything else is !.
_SKELETON = bytes(
    ord("x") if byte in NUMBER_BYTES else byte if byte in b"{}," else ord("!")
    for byte in range(256)
)


class MathematicaCodec(CasCodec):
    """Nested ``{...}`` lists of numbers as Mathematica's InputForm writes them."""

    media_type = "text/x-mathematica"

    def sniff(self, body: bytes) -> bool:
        return body.lstrip()[:2] in (b"<|",) or body.lstrip()[:1] == b"{"

    def decode_tensor(self, body: bytes) -> np.ndarray:
        return parse_list(body)

    def decode_arguments(self, body: bytes) -> dict[str, np.ndarray]:
        if body.lstrip()[:2] == b"<|":
            return parse_association(body)
        return {"x": parse_list(body)}

    def encode_tensor(self, array: np.ndarray) -> bytes:
        return format_list(array).encode()

    def encode_error(self, error: MLBridgeError) -> bytes:
        fields = ", ".join(
            f"{quote(key)} -> {value if isinstance(value, int) else quote(str(value))}"
            for key, value in failure_fields(error).items()
        )
        return f"Failure[{quote(FAILURE_TAG)}, <|{fields}|>]".encode()


def parse_list(body: bytes) -> np.ndarray:
    """Parse a rectangular nested list of numbers into a float64 array."""
    text = body.strip()
    if not text:
        raise PayloadError("empty body; expected a list such as {{0., 0.5}, {1., 0.25}}")
    shape = _fast_shape(text)
    values = _read_numbers(text) if shape else None
    if shape is None or values is None or values.size != prod(shape):
        return _parse_strictly(text)  # slow, and raises a precise error for a malformed body
    return values.reshape(shape)


def parse_association(body: bytes) -> dict[str, np.ndarray]:
    """Parse ``<|"x" -> {...}, "cotangent" -> {...}|>``: string keys, numbers or lists."""
    text = body.strip()
    keys = list(ASSOCIATION_KEY.finditer(text))
    if not (text.startswith(b"<|") and text.endswith(b"|>")) or not keys or keys[0].start() != 2:
        raise PayloadError(
            'expected an association such as <|"x" -> {2., 4.}, "cotangent" -> {1., 0.}|>'
        )
    arguments = {}
    for key, following in zip(keys, [*keys[1:], None]):
        end = following.start() if following else len(text) - 2
        value = text[key.end() : end].strip()
        if following is not None:
            if not value.endswith(b","):
                raise PayloadError(f"association value of {key[1].decode()!r} must end with ','")
            value = value[:-1]
        arguments[key[1].decode()] = _value(value)
    return arguments


def _value(text: bytes) -> np.ndarray:
    if text.lstrip()[:1] == b"{":
        return parse_list(text)
    return parse_list(b"{" + text + b"}").reshape(())  # one number


def _fast_shape(text: bytes) -> tuple[int, ...] | None:
    """The shape, if the text is certainly a well-formed rectangular list; else None.

    The skeleton drops whitespace and turns number characters into ``x``:
    ``{{0., .5}, {1, 2}}`` gives ``{{xxx,xx},{x,x}}``. Without the ``x`` it
    must equal the bare structure of the one shape its first elements
    suggest; no number may touch a brace from outside, and as many numbers
    must start right after a brace or comma as the shape has slots. (That
    each slot holds exactly one number is checked by counting the numbers.)
    """
    skeleton = text.translate(_SKELETON, WHITESPACE)
    if not skeleton.startswith(b"{") or b"!" in skeleton:
        return None
    if b"}x" in skeleton or b"x{" in skeleton:
        return None
    structure = skeleton.translate(None, b"x")
    rank = len(structure) - len(structure.lstrip(b"{"))
    leaf_end = structure.find(b"}")
    if not 0 < rank <= MAX_RANK or leaf_end < 0:
        return None
    shape = [structure.count(b",", rank - 1, leaf_end) + 1]
    for level in range(rank - 2, -1, -1):  # outer levels: count the first list's items
        inner = _structure(tuple(shape))
        if level == 0:  # the whole text: its length says how many
            shape.insert(0, (len(structure) - 1) // (len(inner) + 1))
            break
        count, at, step = 1, level + 1 + len(inner), b"," + inner
        while structure.startswith(step, at):
            count, at = count + 1, at + len(step)
        shape.insert(0, count)
    inner = _structure(tuple(shape[1:]))  # cached; the outermost level is built once here
    if structure != b"{" + b",".join([inner] * shape[0]) + b"}":
        return None
    filled = skeleton.count(b"{x") + skeleton.count(b",x")
    return tuple(shape) if filled == prod(shape) else None


@lru_cache(maxsize=16)
def _structure(shape: tuple[int, ...]) -> bytes:
    """Braces and commas of a list of ``shape``: ``{{,},{,}}`` for (2, 2); ``b""`` for ()."""
    inner = b""
    for size in reversed(shape):
        inner = b"{" + b",".join([inner] * size) + b"}"
    return inner


def _read_numbers(text: bytes) -> np.ndarray | None:
    """Every number in the text, in order; None where one does not read as a number."""
    plain = PRECISION_MARK.sub(b"", text) if b"`" in text else text
    plain = plain.translate(_BLANK_STRUCTURE)
    if b"*" in plain:
        plain = plain.replace(b"*^", b"e")
    return _fromstring(plain)


def _parse_strictly(text: bytes) -> np.ndarray:
    """Parse with every check spelled out, so that a malformed body gets a precise error."""
    raw = np.frombuffer(text, dtype=np.uint8)
    _check_characters(text, raw)
    if raw[0] != OPEN:
        raise PayloadError(
            f"expected a list in braces {{...}}; the body starts with {_context(text, 0)!r}"
        )
    shape = _shape(text, raw)
    return _numbers(text, raw, prod(shape)).reshape(shape)


def _check_characters(text: bytes, raw: np.ndarray) -> None:
    bad = np.flatnonzero(~_ALLOWED[raw])
    if bad.size:
        at = int(bad[0])
        raise PayloadError(
            f"unexpected character {chr(text[at])!r} at byte {at} (near {_context(text, at)!r}); "
            "expected numbers, commas and braces"
        )


def _shape(text: bytes, raw: np.ndarray) -> tuple[int, ...]:
    """Derive the array shape from the braces, or say where the lists are not rectangular."""
    step = (raw == OPEN).astype(np.int32) - (raw == CLOSE)
    depth = np.cumsum(step)  # depth after each byte; an opening brace sits at its level
    if depth[-1] > 0:
        raise PayloadError(f"unbalanced braces: {depth[-1]} '{{' never closed")
    if depth.min() < 0 or np.count_nonzero(depth == 0) != 1:
        at = int(np.flatnonzero(depth <= 0)[0]) + 1
        raise PayloadError(
            f"unexpected text after the list closes, at byte {at} ({_context(text, at)!r})"
        )
    rank = int(depth.max())
    if rank > MAX_RANK:
        raise PayloadError(f"lists nested {rank} deep; at most {MAX_RANK} levels are accepted")
    shape = []
    for level in range(1, rank + 1):
        shape.append(_length_at(text, raw, depth, level))
    return tuple(shape)


def _length_at(text: bytes, raw: np.ndarray, depth: np.ndarray, level: int) -> int:
    """The common length of all lists at ``level``; raise if they differ."""
    opens = np.flatnonzero((raw == OPEN) & (depth == level))
    commas = np.flatnonzero((raw == COMMA) & (depth == level))
    owner = np.searchsorted(opens, commas) - 1  # which list each comma belongs to
    counts = np.bincount(owner, minlength=opens.size) + 1
    empty = raw[_next_solid(raw, opens + 1)] == CLOSE
    counts[empty] = 0
    if np.any(counts != counts[0]):
        first = int(np.flatnonzero(counts != counts[0])[0])
        raise PayloadError(
            f"ragged lists at depth {level}: lengths {counts[0]} and {counts[first]} "
            f"(near byte {opens[first]}: {_context(text, int(opens[first]))!r}); "
            "expected a rectangular array"
        )
    inner_opens = np.count_nonzero((raw == OPEN) & (depth == level + 1))
    if inner_opens and inner_opens != opens.size * counts[0]:
        raise PayloadError(
            f"lists at depth {level} mix numbers and lists; expected a rectangular array"
        )
    return int(counts[0])


def _next_solid(raw: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Index of the first non-whitespace byte at or after each position."""
    solid = np.flatnonzero(~np.isin(raw, np.frombuffer(WHITESPACE, np.uint8)))
    return solid[np.searchsorted(solid, positions)]


def _numbers(text: bytes, raw: np.ndarray, expected: int) -> np.ndarray:
    """Read every number in one pass; on a miscount, find and name the bad token."""
    tokens = _count_tokens(raw)
    if tokens == 0 == expected:
        return np.zeros(0)
    values = _read_numbers(text)
    if values is not None and values.size == expected == tokens:
        return values
    plain = text.translate(_BLANK_STRUCTURE).replace(b"*^", b"e")
    _raise_bad_token(PRECISION_MARK.sub(b"", plain), expected)
    raise PayloadError(
        f"found {tokens} numbers where the commas and braces make room for {expected}; "
        "separate numbers with commas"
    )


def _count_tokens(raw: np.ndarray) -> int:
    solid = ~_SEPARATOR[raw]
    return int(np.count_nonzero(solid[1:] & ~solid[:-1]) + solid[0])


def _fromstring(plain: bytes) -> np.ndarray | None:
    """All numbers, or None where numpy stops at something that is not one."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # "could not read to its end"
        try:
            return np.fromstring(plain, dtype=np.float64, sep=" ")
        except (ValueError, DeprecationWarning):
            return None


def _raise_bad_token(plain: bytes, expected: int) -> None:
    """Raise a PayloadError naming the first token that is not one number."""
    for index, token in enumerate(plain.split()):
        try:
            float(token)
        except ValueError:
            shown = token.decode(errors="replace").replace("e", "*^")
            raise PayloadError(
                f"{shown!r} (number {index + 1}) is not a number; expected numbers "
                "such as 1, -3, 1., .5, 1.5*^-7"
            ) from None


def format_list(array: np.ndarray) -> str:
    """Write an array as nested ``{...}`` lists that ToExpression reads back exactly."""
    array = np.asarray(array)
    words = [format_number(x, array.dtype) for x in array.ravel().tolist()]
    return words[0] if array.ndim == 0 else _nest(words, array.shape)


def format_number(value: float | int, dtype: np.dtype) -> str:
    """One number in InputForm: reals always carry a point and use ``*^``."""
    return _real(float(value), dtype) if dtype.kind == "f" else str(int(value))


def _real(value: float, dtype: np.dtype) -> str:
    """Shortest text that reads back to the same float32/float64 value."""
    if value != value or value in (float("inf"), float("-inf")):
        return {"nan": "Indeterminate", "inf": "Infinity", "-inf": "-Infinity"}[repr(value)]
    number = dtype.type(value)
    if value == 0 or 1e-5 <= abs(value) < 1e15:
        return np.format_float_positional(number, unique=True, trim=".")
    text = np.format_float_scientific(number, unique=True, trim=".", exp_digits=1)
    mantissa, exponent = text.split("e")
    return f"{mantissa}*^{int(exponent)}"


def _nest(words: list[str], shape: tuple[int, ...]) -> str:
    for size in reversed(shape[1:]):
        words = ["{" + ", ".join(words[i : i + size]) + "}" for i in range(0, len(words), size)]
    return "{" + ", ".join(words) + "}"


def quote(text: str) -> str:
    """A Wolfram Language string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _context(text: bytes, at: int, width: int = 20) -> str:
    return text[max(0, at - width // 2) : at + width // 2].decode(errors="replace")
