"""Mathematica list text: ``{{0., .5, 1.5*^-7}, ...}`` in, ``{...}`` out.

Parsing runs in C-speed passes over the whole text: bytes.translate makes
a skeleton of braces and commas that one comparison checks against the
rectangular shape it suggests, and simdjson reads all numbers once the text
is spelled as JSON's (numpy's parser where it is not: half the speed). A
small text (up to 64 KiB) is spelled as nested JSON instead and read in one
parse, whose grammar checks the skeleton's slots itself. A body that fails
any check is parsed again step by step, only to say what is wrong and where.

Both paths are bounded: the number count is known from the braces before
any number is read and must stay within ``max_values``; the step-by-step
path checks the nesting in fixed-size chunks before it builds anything per
byte, and its per-byte arrays are one byte wide, so a body costs a few times
its size at most. ``Indeterminate`` and ``(-)Infinity`` read as NaN and
(-)inf, which the inference layer refuses unless the model opts in; a
number too large for a 64-bit float (``1*^999``) is an error here.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from functools import lru_cache
from itertools import islice
from math import prod

import numpy as np
import simdjson

from ..errors import MLBridgeError, PayloadError
from ..protocol import all_finite
from .base import DEFAULT_MAX_VALUES, FAILURE_TAG, CasCodec, check_values, failure_fields
from .json_tensors import flat_numbers
from .v2 import dumps, json_values

OPEN, CLOSE, COMMA = ord("{"), ord("}"), ord(",")
NUMBER = ord("x")  # what a number character is in the skeleton
WHITESPACE = b" \t\r\n"
NUMBER_BYTES = b"0123456789.+-*^`"
# Precision or accuracy marks: 2.5`10. or 2.5``20 (the mark is dropped, the value kept).
PRECISION_MARK = re.compile(rb"(?<=[0-9.])``?[0-9.]*")
MAX_RANK = 32
MAX_ASSOCIATION_KEYS = 16
ASSOCIATION_KEY = re.compile(rb'(?<=[<|,])\s*"([A-Za-z][A-Za-z0-9_]*)"\s*->')
# The symbols InputForm writes for non-finite reals, and what numpy reads for each.
SYMBOLS = {b"Indeterminate": b"nan", b"Infinity": b"inf"}
SYMBOL = re.compile(rb"(?<![A-Za-z0-9$`])(Indeterminate|Infinity)(?![A-Za-z0-9$`\[])")
NOT_REAL = re.compile(rb"ComplexInfinity|DirectedInfinity")
LETTER = re.compile(rb"[A-Za-z]")
TOKEN = re.compile(rb"\S+")
CHUNK = 1 << 20  # bytes per step of the chunked passes
SMALL_SKELETON = 1 << 16  # bytes of skeleton counted by bytes.count (~16 images)
PAIRS = (b"}x", b"x{", b"{x", b",x")  # _pair_counts' pairs, in its order

ALLOWED = WHITESPACE + NUMBER_BYTES + b"{},"
NOT_STRUCTURE = NUMBER_BYTES + WHITESPACE  # deleted, they leave a list's braces and commas
SYMBOL_LETTERS = b"naif"  # of nan and inf, what SYMBOLS puts in the text
_SEPARATOR = np.zeros(256, dtype=bool)
_SEPARATOR[list(WHITESPACE + b"{},")] = True
_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[list(WHITESPACE)] = True
_BLANK_STRUCTURE = bytes.maketrans(b"{},", b"   ")
_BLANK_BRACES = bytes.maketrans(b"{}", b"  ")
_BRACKETS_AS_BRACES = bytes.maketrans(b"[]", b"{}")
_BRACES_AS_BRACKETS = bytes.maketrans(b"{}", b"[]")
SMALL_TEXT = 1 << 16  # bytes of text read in one nested JSON parse (~13 images)
_NEGATIVE_ZERO = re.compile(rb"-0\.(?![0-9])").search  # -0. as InputForm writes negative zero
BARE_MANTISSA = re.compile(rb"(?<![0-9.])([0-9]+)e")  # orjson's 1e-7: InputForm wants 1.*^-7
JSON_ROUTE_MIN = 512  # bytes of text from which simdjson beats numpy's parser (2.2x at 5 KB)
# The exponent mark as JSON spells it, in replacements of equal length (in this order):
# 1.*^-7 -> 1e-007, 1.*^7 -> 1e+07, 1.5*^-7 -> 1.5e-07, 1.5*^7 -> 1.5e+7.
EXPONENTS = ((b".*^-", b"e-00"), (b".*^", b"e+0"), (b"*^-", b"e-0"), (b"*^", b"e+"))
# Mathematica's numbers JSON lacks a digit in: a bare point before a separator or exponent,
# or after a separator or sign. Other spellings fail the JSON route and take numpy's.
JSON_NUMBER_FIXES = (
    (b".,", b".0,"), (b". ", b".0 "), (b".e", b".0e"),
    (b",.", b",0."), (b" .", b" 0."), (b"-.", b"-0."),
)  # fmt: skip


def skeleton_table(number_bytes: bytes, lists: bytes = b"{}") -> bytes:
    """For the skeleton: number characters become x, the list delimiters ``lists`` braces,
    commas stay, anything else !."""
    braces = dict(zip(lists, b"{}"))
    return bytes(
        ord("x") if byte in number_bytes else braces.get(byte, byte if byte == COMMA else ord("!"))
        for byte in range(256)
    )


_SKELETON = skeleton_table(NUMBER_BYTES)
_SKELETON_SYMBOLS = skeleton_table(NUMBER_BYTES + SYMBOL_LETTERS)


class MathematicaCodec(CasCodec):
    """Nested ``{...}`` lists of numbers as Mathematica's InputForm writes them."""

    media_type = "text/x-mathematica"

    def __init__(self, max_values: int = DEFAULT_MAX_VALUES) -> None:
        self.max_values = max_values

    def sniff(self, body: bytes) -> bool:
        return body.lstrip()[:2] in (b"<|",) or body.lstrip()[:1] == b"{"

    def decode_tensor(self, body: bytes) -> np.ndarray:
        return parse_list(body, self.max_values)

    def decode_arguments(self, body: bytes) -> dict[str, np.ndarray]:
        if body.lstrip()[:2] == b"<|":
            return parse_association(body, self.max_values)
        return {"x": parse_list(body, self.max_values)}

    def encode_tensor(self, array: np.ndarray) -> bytes:
        return write_list(array)

    def encode_error(self, error: MLBridgeError) -> bytes:
        fields = ", ".join(
            f"{quote(key)} -> {value if isinstance(value, int) else quote(str(value))}"
            for key, value in failure_fields(error).items()
        )
        return f"Failure[{quote(FAILURE_TAG)}, <|{fields}|>]".encode()


def parse_list(body: bytes, max_values: int = DEFAULT_MAX_VALUES) -> np.ndarray:
    """Parse a rectangular nested list of numbers into a float64 array."""
    text = body.strip()
    if not text:
        raise PayloadError("empty body; expected a list such as {{0., 0.5}, {1., 0.25}}")
    values = _read_small(text, max_values)
    if values is not None:
        return values
    shape = fast_shape(text)
    if shape is None:
        symbolic = _with_symbols(text)
        if symbolic is not None:
            return _parse_symbolic(text, symbolic, max_values)
        return _parse_strictly(text, max_values=max_values)  # slow; names what is wrong
    check_values(prod(shape), max_values, "the list")
    values = _read_numbers(text)
    if values is None or values.size != prod(shape):
        return _parse_strictly(text, max_values=max_values)
    _check_finite(values, text)
    return values.reshape(shape)


def parse_association(body: bytes, max_values: int = DEFAULT_MAX_VALUES) -> dict[str, np.ndarray]:
    """Parse ``<|"x" -> {...}, "cotangent" -> {...}|>``: string keys, numbers or lists."""
    text = body.strip()
    keys = list(islice(ASSOCIATION_KEY.finditer(text), MAX_ASSOCIATION_KEYS + 1))
    if not (text.startswith(b"<|") and text.endswith(b"|>")) or not keys or keys[0].start() != 2:
        raise PayloadError(
            'expected an association such as <|"x" -> {2., 4.}, "cotangent" -> {1., 0.}|>'
        )
    if len(keys) > MAX_ASSOCIATION_KEYS:
        raise PayloadError(f"an association holds at most {MAX_ASSOCIATION_KEYS} keys")
    arguments: dict[str, np.ndarray] = {}
    for key, following in zip(keys, [*keys[1:], None]):
        end = following.start() if following else len(text) - 2
        value = text[key.end() : end].strip()
        if following is not None:
            if not value.endswith(b","):
                raise PayloadError(f"association value of {key[1].decode()!r} must end with ','")
            value = value[:-1]
        name = key[1].decode()
        if name in arguments:
            raise PayloadError(f"association key {name!r} appears twice; expected each once")
        arguments[name] = _value(name, value, max_values)
    return arguments


def _value(name: str, text: bytes, max_values: int) -> np.ndarray:
    if text.lstrip()[:1] == b"{":
        return parse_list(text, max_values)
    values = parse_list(b"{" + text + b"}", max_values)
    if values.shape != (1,):
        raise PayloadError(
            f"association value of {name!r} is {text[:40].decode(errors='replace')!r}; "
            "expected one number or a list"
        )
    return values.reshape(())


def _with_symbols(text: bytes) -> bytes | None:
    """The text with Indeterminate and Infinity as numpy reads them; None if it has none.

    A text with any other letters is left to the strict parser, which names the
    first unexpected character; ComplexInfinity is no real number and is refused.
    """
    if LETTER.search(text) is None:
        return None
    not_real = NOT_REAL.search(text)
    if not_real is not None:
        raise PayloadError(
            f"{not_real[0].decode()} at byte {not_real.start()} is not a real number; "
            "expected real numbers (Indeterminate and Infinity are read as NaN and infinity)"
        )
    replaced = SYMBOL.sub(lambda match: SYMBOLS[match[1]], text)
    if replaced == text or LETTER.search(SYMBOL.sub(b"", text)) is not None:
        return None
    return replaced


def _parse_symbolic(text: bytes, symbolic: bytes, max_values: int) -> np.ndarray:
    """A list with Indeterminate or Infinity; checked first with each symbol read as 0."""
    parse_list(SYMBOL.sub(b"0", text), max_values)  # shape, count and overflow, named as sent
    shape = fast_shape(symbolic, _SKELETON_SYMBOLS)
    values = _read_numbers(symbolic) if shape else None
    if shape is None or values is None or values.size != prod(shape):
        return _parse_strictly(symbolic, ALLOWED + SYMBOL_LETTERS, max_values, finite=False)
    return values.reshape(shape)


def _check_finite(values: np.ndarray, text: bytes) -> None:
    """Numbers that overflowed a 64-bit float (``1*^999``, 400 digits) are an error."""
    if all_finite(values):
        return
    index = int(np.argmin(np.isfinite(values).ravel()))
    token = _token(text, index)
    raise PayloadError(
        f"number {index + 1} ({token}) is too large for a 64-bit float; "
        "expected magnitudes up to 1.79*^308"
    )


def _token(text: bytes, index: int) -> str:
    """The ``index``-th number of the text as sent (read lazily: the body may be large)."""
    plain = text.translate(_BLANK_STRUCTURE)
    found = next(islice(TOKEN.finditer(plain), index, None), None)
    shown = found[0][:40].decode(errors="replace") if found else "?"
    return shown + ("..." if found and len(found[0]) > 40 else "")


def fast_shape(text: bytes, table: bytes = _SKELETON) -> tuple[int, ...] | None:
    """The shape, if the text is certainly a well-formed rectangular list; else None.

    The skeleton drops whitespace and turns number characters into ``x``:
    ``{{0., .5}, {1, 2}}`` gives ``{{xxx,xx},{x,x}}``. Without the ``x`` it
    must be the structure of a rectangular list (:func:`structure_shape`); no
    number may touch a brace from outside, and as many numbers must start right
    after a brace or comma as the shape has slots. (That each slot holds
    exactly one number is checked by counting the numbers.)
    """
    skeleton = text.translate(table, WHITESPACE)
    if not skeleton.startswith(b"{") or b"!" in skeleton:
        return None
    close_x, x_open, open_x, comma_x = _pair_counts(skeleton)
    if close_x or x_open:  # a number touches a brace from outside
        return None
    shape = structure_shape(skeleton.translate(None, b"x"))
    filled = open_x + comma_x  # numbers that start a slot
    return shape if shape is not None and filled == prod(shape) else None


def structure_shape(structure: bytes) -> tuple[int, ...] | None:
    """The shape of the rectangular list whose braces and commas are ``structure`` (its
    numbers left out), worked out from its first elements; None unless ``structure`` is
    exactly that list's."""
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
    if structure != _joined(_structure(tuple(shape[1:])), shape[0]):
        return None
    return tuple(shape)


def _structure(shape: tuple[int, ...]) -> bytes:
    """Braces and commas of a list of ``shape``: ``{{,},{,}}`` for (2, 2); ``b""`` for ()."""
    return _small_structure(shape) if prod(shape) <= 1 << 16 else _build_structure(shape)


@lru_cache(maxsize=16)
def _small_structure(shape: tuple[int, ...]) -> bytes:
    return _build_structure(shape)  # cached only when small: the cache outlives the request


def _build_structure(shape: tuple[int, ...]) -> bytes:
    inner = b""
    for size in reversed(shape):
        inner = _joined(inner, size)
    return inner


def _joined(inner: bytes, count: int) -> bytes:
    """``{inner,inner,...}`` with ``count`` copies, by repetition (a join of millions of
    items would first build a buffer record for each)."""
    return b"{" + (inner + b",") * (count - 1) + inner + b"}" if count else b"{}"


def _read_numbers(text: bytes) -> np.ndarray | None:
    """Every number in the text, in order; None where one does not read as a number."""
    if len(text) >= JSON_ROUTE_MIN and b"`" not in text:
        values = _read_as_json(text)
        if values is not None:
            return values
    plain = PRECISION_MARK.sub(b"", text) if b"`" in text else text
    plain = plain.translate(_BLANK_STRUCTURE)
    if b"*" in plain:
        plain = plain.replace(b"*^", b"e")
    return _fromstring(plain)


def _read_as_json(text: bytes) -> np.ndarray | None:
    """The numbers read by simdjson once the text is JSON's (``1.5*^-7`` -> ``1.5e-07``,
    ``0.`` -> ``0.0``), 3-5x faster than numpy's parser; None if any is not then a JSON
    number (the caller reads the text the slow way, which says what is wrong).

    Spelled first by replacements of equal length, which cost a copy each (InputForm's
    ``0., `` -> ``0.0,``); where that is not valid JSON (a bare point elsewhere: ``.5``,
    ``1.,2.``), spelled again with each bare point given its digit, which costs more.
    Either spelling keeps every value: a text it does not make JSON's fails to parse.
    """
    values = _json_numbers(text, _json_spelling)
    return values if values is not None else _json_numbers(text, _json_spelling_fixed)


def _read_small(text: bytes, max_values: int) -> np.ndarray | None:
    """A small list read in one parse of it spelled as nested JSON (braces as brackets);
    None to read it the general way (:func:`fast_shape`, then :func:`_read_numbers`).

    simdjson's parse of the nested spelling checks what the skeleton's pair counts check
    for the general way (every slot holds one number, no number touches a brace from
    outside), and :func:`structure_shape` that the nesting is rectangular: one image's
    decode takes half the general way's time (docs/performance.md, change 16).
    """
    if not JSON_ROUTE_MIN <= len(text) <= SMALL_TEXT or b"`" in text:
        return None
    if b"-" in text and _NEGATIVE_ZERO(text):
        return None
    shape = structure_shape(text.translate(None, NOT_STRUCTURE))
    if shape is None:
        return None
    size = prod(shape)
    check_values(size, max_values, "the list")
    try:
        parsed = simdjson.Parser().parse(_json_nested_spelling(text))
        if not isinstance(parsed, simdjson.Array):
            return None
        values = np.frombuffer(parsed.as_buffer(of_type="d"), np.float64)
    except (ValueError, TypeError, RuntimeError):
        return None  # not JSON so spelled (a bare point elsewhere, a huge number): the general way
    return values.reshape(shape) if values.size == size else None


def _json_nested_spelling(text: bytes) -> bytes:
    """List text as nested JSON, where InputForm's spelling allows (else not valid JSON), in
    replacements of equal length: braces as brackets, exponents as in :func:`_json_spelling`,
    and a bare point before a separator dropped (``0., `` -> ``0 , ``: the integer reads as
    the same double; ``-0.``, whose sign it would lose, is left to the general way)."""
    plain = _exponents_spelled(text.translate(_BRACES_AS_BRACKETS))
    return plain.replace(b"., ", b" , ").replace(b".]", b" ]")


def _json_numbers(text: bytes, spelling: Callable[[bytes], bytes]) -> np.ndarray | None:
    pieces, start = [], 0
    while start < len(text):  # in pieces cut after a separator: each pass holds the GIL briefly
        cut = text.find(b",", min(start + CHUNK, len(text)))
        cut = len(text) if cut == -1 else cut + 1
        while cut < len(text) and text[cut] in WHITESPACE:  # keep "., " whole
            cut += 1
        pieces.append(spelling(text[start:cut]))
        start = cut
    plain = b"".join(pieces)
    values = flat_numbers(plain, 0, len(plain))
    return None if values is None else values.astype(np.float64, copy=False)


def _json_spelling(piece: bytes) -> bytes:
    """A piece of list text (whole numbers only) as JSON spells it, where InputForm's
    spacing allows replacements of equal length; else not valid JSON."""
    plain = _exponents_spelled(piece.translate(_BLANK_BRACES))
    return plain.replace(b"., ", b".0,").replace(b". ", b".0")


def _exponents_spelled(plain: bytes) -> bytes:
    """InputForm's exponent marks as JSON's, in replacements of equal length."""
    if b"^" in plain:  # looked for alone: 10x faster than b"*^" where there is none
        for mark, spelled in EXPONENTS:
            plain = plain.replace(mark, spelled)
    return plain


def _json_spelling_fixed(piece: bytes) -> bytes:
    """A piece of list text (whole numbers only) as JSON spells it: each bare point given
    its digit (replacements that grow the text)."""
    plain = piece.translate(_BLANK_BRACES)
    if b"*^" in plain:
        plain = plain.replace(b"*^", b"e")
    for bare, fixed in JSON_NUMBER_FIXES:
        if bare in plain:
            plain = plain.replace(bare, fixed)
    return b"0" + plain if plain.startswith(b".") else plain


def _pair_counts(skeleton: bytes) -> tuple[int, int, int, int]:
    """How often ``}x``, ``x{``, ``{x`` and ``,x`` occur in the skeleton. A small one by
    ``bytes.count``, which keeps numpy's ufunc machinery off a small request's path (its
    code evicts the rest of the request's from the cache); a big one in one numpy pass, a
    chunk at a time (numpy lets go of the GIL, where ``bytes.count`` held it for the whole
    of a big body: 0.2 s on 25 MB)."""
    if len(skeleton) <= SMALL_SKELETON:
        close_x, x_open, open_x, comma_x = (skeleton.count(pair) for pair in PAIRS)
        return close_x, x_open, open_x, comma_x
    view = np.frombuffer(skeleton, np.uint8)
    close_x = x_open = open_x = comma_x = 0
    for start in range(0, max(view.size - 1, 0), CHUNK):
        head = view[start : start + CHUNK]
        tail = view[start + 1 : start + CHUNK + 1]
        head = head[: tail.size]
        number_after = tail == NUMBER
        close_x += int(np.count_nonzero((head == CLOSE) & number_after))
        x_open += int(np.count_nonzero((head == NUMBER) & (tail == OPEN)))
        open_x += int(np.count_nonzero((head == OPEN) & number_after))
        comma_x += int(np.count_nonzero((head == COMMA) & number_after))
    return close_x, x_open, open_x, comma_x


def _parse_strictly(
    text: bytes,
    allowed: bytes = ALLOWED,
    max_values: int = DEFAULT_MAX_VALUES,
    finite: bool = True,
) -> np.ndarray:
    """Parse with every check spelled out, so that a malformed body gets a precise error.

    Memory stays a few times the text: the nesting is checked in chunks first,
    then per-byte depths are one byte wide, and positions are kept only for
    the lists of one level at a time.
    """
    _check_characters(text, allowed)
    if text[0] != OPEN:
        raise PayloadError(
            f"expected a list in braces {{...}}; the body starts with {_context(text, 0)!r}"
        )
    raw = np.frombuffer(text, dtype=np.uint8)
    shape = _shape(text, raw)
    check_values(prod(shape), max_values, "the list")
    values = _numbers(text, raw, prod(shape))
    if finite:
        _check_finite(values, text)
    return values.reshape(shape)


def _check_characters(text: bytes, allowed: bytes) -> None:
    bad = text.translate(None, allowed)
    if bad:
        at = text.find(bad[:1])  # the first byte of the first bad value is the first bad byte
        raise PayloadError(
            f"unexpected character {chr(text[at])!r} at byte {at} (near {_context(text, at)!r}); "
            "expected numbers, commas and braces"
        )


def _shape(text: bytes, raw: np.ndarray) -> tuple[int, ...]:
    """Derive the array shape from the braces, or say where the lists are not rectangular."""
    rank = _check_nesting(text, raw)
    step = (raw == OPEN).view(np.int8) - (raw == CLOSE).view(np.int8)
    depth = np.cumsum(step, dtype=np.int8)  # 0..MAX_RANK, checked above; a '{' at its level
    del step
    return tuple(_length_at(text, raw, depth, level) for level in range(1, rank + 1))


def _check_nesting(text: bytes, raw: np.ndarray) -> int:
    """The nesting depth, checked chunk by chunk: balanced, one list, at most MAX_RANK deep."""
    carry, deepest, closed_at = 0, 0, -1
    for start in range(0, raw.size, CHUNK):
        chunk = raw[start : start + CHUNK]
        step = (chunk == OPEN).view(np.int8) - (chunk == CLOSE).view(np.int8)
        depth = np.cumsum(step, dtype=np.int64) + carry
        deepest, carry = max(deepest, int(depth.max())), int(depth[-1])
        low = depth <= 0
        if closed_at < 0 and low.any():
            at = start + int(np.argmax(low))
            if at != raw.size - 1:
                closed_at = at + 1
    if carry > 0:
        raise PayloadError(f"unbalanced braces: {carry} '{{' never closed")
    if closed_at >= 0 or carry < 0:
        at = closed_at if closed_at >= 0 else raw.size - 1
        raise PayloadError(
            f"unexpected text after the list closes, at byte {at} ({_context(text, at)!r})"
        )
    if deepest > MAX_RANK:
        raise PayloadError(f"lists nested {deepest} deep; at most {MAX_RANK} levels are accepted")
    return deepest


def _length_at(text: bytes, raw: np.ndarray, depth: np.ndarray, level: int) -> int:
    """The common length of all lists at ``level``; raise if they differ.

    A list at ``level`` runs from its ``{`` (depth ``level``) to its ``}`` (depth
    ``level - 1`` after it); the i-th of each belong together. Its length is its
    commas at ``level`` plus one, or zero if nothing but whitespace is inside.
    """
    opens = _positions((raw == OPEN) & (depth == level))
    closes = _positions((raw == CLOSE) & (depth == level - 1))
    at_level = (raw == COMMA) & (depth == level)
    counts = _count_before(at_level, closes)
    counts -= _count_before(at_level, opens)
    counts += 1
    del at_level
    solid = ~_WHITESPACE[raw]
    inside = _count_before(solid, closes)
    inside -= _count_before(solid, opens + 1)
    del solid, closes
    counts[inside == 0] = 0  # nothing but whitespace inside: an empty list
    del inside
    if np.any(counts != counts[0]):
        first = int(np.argmax(counts != counts[0]))
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


def _positions(mask: np.ndarray) -> np.ndarray:
    """Indices of the true bytes, found chunk by chunk and kept as int32 where they fit."""
    kind = np.int32 if mask.size < 2**31 else np.int64
    parts = [
        (np.flatnonzero(mask[start : start + CHUNK]) + start).astype(kind)
        for start in range(0, mask.size, CHUNK)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, kind)


def _count_before(mask: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """For each of the ascending ``positions``, how many bytes before it are true."""
    counts = np.zeros(positions.size, positions.dtype)
    total = 0
    starts = np.arange(0, mask.size + 1, CHUNK)
    bounds = np.searchsorted(positions, np.append(starts, np.iinfo(np.int64).max))
    for index, start in enumerate(starts.tolist()):
        chunk = mask[start : start + CHUNK]
        low, high = bounds[index], bounds[index + 1]
        if high > low:
            local = positions[low:high] - start  # bytes of this chunk before each position
            running = np.concatenate(([0], np.cumsum(chunk, dtype=positions.dtype)))
            counts[low:high] = total + running[np.minimum(local, chunk.size)]
        total += int(np.count_nonzero(chunk))
    return counts


def _numbers(text: bytes, raw: np.ndarray, expected: int) -> np.ndarray:
    """Read every number in one pass; on a miscount, find and name the bad token."""
    tokens = _count_tokens(raw)
    if tokens == 0 == expected:
        return np.zeros(0)
    values = _read_numbers(text)
    if values is not None and values.size == expected == tokens:
        return values
    plain = text.translate(_BLANK_STRUCTURE).replace(b"*^", b"e")
    _raise_bad_token(PRECISION_MARK.sub(b"", plain))
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


def _raise_bad_token(plain: bytes) -> None:
    """Raise a PayloadError naming the first token that is not one number."""
    for index, match in enumerate(TOKEN.finditer(plain)):  # lazily: the body may be large
        token = match[0]
        try:
            float(token)
        except ValueError:
            shown = token[:40].decode(errors="replace").replace("e", "*^")
            raise PayloadError(
                f"{shown!r} (number {index + 1}) is not a number; expected numbers "
                "such as 1, -3, 1., .5, 1.5*^-7"
            ) from None


def format_list(array: np.ndarray) -> str:
    """Write an array as nested ``{...}`` lists that ToExpression reads back exactly."""
    return write_list(array).decode()


def write_list(array: np.ndarray) -> bytes:
    """:func:`format_list` as bytes: orjson's shortest round-trip digits (float32 at its
    own precision), respelled for Mathematica, where it can write the array; else a word
    per number (NaN and infinities, float16, booleans, empty or 0-d arrays)."""
    array = np.asarray(array)
    if _orjson_writes(array):
        return _respelled(dumps(json_values(array)))
    words = [format_number(x, array.dtype) for x in array.ravel().tolist()]
    return (words[0] if array.ndim == 0 else _nest(words, array.shape)).encode()


def _orjson_writes(array: np.ndarray) -> bool:
    """Whether orjson writes every number of ``array`` as InputForm's (finite, not float16)."""
    if not (array.ndim and array.size and array.dtype.kind in "iuf"):
        return False
    return array.dtype.kind != "f" or (array.dtype != np.float16 and all_finite(array))


def _respelled(written: bytes) -> bytes:
    """A JSON array of numbers as InputForm: braces, reals with a point, ``*^`` exponents."""
    if b"e" in written:  # 1e-7 -> 1.*^-7, 2.5e+20 -> 2.5*^20
        written = BARE_MANTISSA.sub(rb"\1.e", written).replace(b"e+", b"*^").replace(b"e", b"*^")
    written = written.replace(b".0,", b".,").replace(b".0]", b".]")  # 3.0 -> 3.
    return written.translate(_BRACKETS_AS_BRACES).replace(b",", b", ")


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
    if not words:  # a zero among the dimensions: the lists nest as far as they have items
        return _empty(shape)
    for size in reversed(shape[1:]):
        words = ["{" + ", ".join(words[i : i + size]) + "}" for i in range(0, len(words), size)]
    return "{" + ", ".join(words) + "}"


def _empty(shape: tuple[int, ...]) -> str:
    inner = _empty(shape[1:]) if len(shape) > 1 and shape[0] else ""
    return "{" + ", ".join([inner] * shape[0] if inner else []) + "}"


def quote(text: str) -> str:
    """A Wolfram Language string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _context(text: bytes, at: int, width: int = 20) -> str:
    return text[max(0, at - width // 2) : at + width // 2].decode(errors="replace")
