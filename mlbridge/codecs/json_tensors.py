"""Large numeric ``data`` arrays of a V2 JSON body, read straight into numpy.

orjson makes a Python number of every value (about 32 bytes and 75 ns each): a request of
10,000 MNIST images, 42 MB of JSON, then takes most of a second and 18 times its size.
Here each ``"data": [...]`` span of at least :data:`MIN_SPAN` bytes is cut out of the body
and its numbers parsed by simdjson, :data:`CHUNK` bytes at a time, into one flat float64
(or int64) array; the rest of the body, a marker in place of each span, goes to orjson as
before. Memory stays near the array itself: no Python object per number.

The route is exact or it declines: :func:`load_with_arrays` returns None whenever its
answer could differ from orjson reading the whole body (anything but numbers in a span, a
number orjson reads otherwise or refuses, nesting other than the declared shape, a span
that is not some entry's ``data``). The caller then parses the whole body the plain way,
which gives the same arrays and the same errors.
"""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np
import orjson
import simdjson

MIN_SPAN = 3072  # bytes of "data" below which orjson is as fast (one MNIST image: ~4 KB)
CHUNK = 1 << 16  # bytes of numbers per simdjson parse: its working memory is ~14x this
MAX_NESTING = 32  # the codec's own limit on axes (v2.MAX_RANK)
WHITESPACE = b" \t\n\r"
NUMBER_BYTES = b"0123456789-+.eE"
FLOAT_BYTES = (b".", b"e", b"E")  # a JSON number with any of these is a float to orjson
SPACE_BYTES = np.frombuffer(WHITESPACE, np.uint8)
BEFORE_OPEN = np.frombuffer(b"[,", np.uint8)  # in nested number arrays, what precedes a [
AFTER_CLOSE = np.frombuffer(b"],", np.uint8)  # and what follows a ]
MAX_INDENT = 64  # blanks between brackets that nested data may have
BRACKETS_AS_SPACES = bytes.maketrans(b"[]", b"  ")
NONCE = secrets.token_hex(8)  # in every marker: a client cannot forge one (none ever leaves)


def load_with_arrays(header: bytes, section: str) -> dict[str, Any] | None:
    """The JSON document with each large ``data`` of ``section``'s entries already an array
    (flat float64 or int64, as orjson's numbers would make it; the floats of an FP32 entry
    as float32, as the codec would cast them); None to parse it plainly."""
    spans = data_spans(header)
    if not spans:
        return None
    try:
        document = orjson.loads(skeleton(header, spans, NONCE))
    except orjson.JSONDecodeError:
        return None
    marked = marked_entries(document, section, NONCE, len(spans))
    if marked is None:
        return None
    for index, entry in marked.items():
        narrow = np.float32 if entry.get("datatype") == "FP32" else None
        array = span_numbers(header, spans[index], entry.get("shape"), narrow)
        if array is None:
            return None
        entry["data"] = array
    return document


def data_spans(header: bytes) -> list[tuple[int, int]]:
    """Where each large array value of a ``"data"`` key lies, as [start, end) byte offsets."""
    spans: list[tuple[int, int]] = []
    position = 0
    while (found := header.find(b'"data"', position)) != -1:
        position = found + len(b'"data"')
        if found and header[found - 1] == ord("\\"):
            continue  # an escaped quote: inside a string
        start = _array_after_colon(header, position)
        if start < 0:
            continue
        end = array_end(header, start)
        if end < 0:
            break
        if end - start >= MIN_SPAN:
            spans.append((start, end))
        position = end
    return spans


def _array_after_colon(header: bytes, position: int) -> int:
    """The offset of the ``[`` in ``: [`` at ``position`` (whitespace allowed), else -1."""
    position = _skip_whitespace(header, position)
    if header[position : position + 1] != b":":
        return -1
    position = _skip_whitespace(header, position + 1)
    return position if header[position : position + 1] == b"[" else -1


def _skip_whitespace(header: bytes, position: int) -> int:
    while header[position : position + 1] in (b" ", b"\t", b"\n", b"\r"):
        position += 1
    return position


def array_end(header: bytes, start: int) -> int:
    """The offset just past the ``]`` that closes the ``[`` at ``start``, counting brackets
    only (a span holding a string is declined later); -1 if it is never closed."""
    close = header.find(b"]", start)
    if close != -1 and header.find(b"[", start + 1, close) == -1:
        return close + 1  # flat: the common case, two memchr scans
    depth, position, block = 0, start, 1 << 16
    while position < len(header):
        view = np.frombuffer(header, np.uint8, min(block, len(header) - position), position)
        brackets = np.flatnonzero((view == ord("[")) | (view == ord("]")))
        depths = depth + np.cumsum(np.where(view[brackets] == ord("["), 1, -1))
        closed = np.flatnonzero(depths == 0)
        if closed.size:
            return position + int(brackets[closed[0]]) + 1
        depth = int(depths[-1]) if depths.size else depth
        position += view.size
        block = min(block * 2, 1 << 22)
    return -1


def skeleton(header: bytes, spans: list[tuple[int, int]], nonce: str) -> bytes:
    """The body with each span replaced by a marker string naming it."""
    parts, previous = [], 0
    for index, (start, end) in enumerate(spans):
        parts += [header[previous:start], f'"\\u0000{nonce}:{index}"'.encode()]
        previous = end
    parts.append(header[previous:])
    return b"".join(parts)


def marked_entries(document: Any, section: str, nonce: str, count: int) -> dict[int, dict] | None:
    """Each span's entry of ``section``, by span index; None unless every marker is the
    ``data`` of an entry (a duplicate key drops one, another key's ``data`` is elsewhere)."""
    entries = document.get(section) if isinstance(document, dict) else None
    if not isinstance(entries, list):
        return None
    prefix = f"\x00{nonce}:"
    marked = {}
    for entry in entries:
        data = entry.get("data") if isinstance(entry, dict) else None
        if isinstance(data, str) and data.startswith(prefix):
            marked[int(data[len(prefix) :])] = entry
    return marked if len(marked) == count else None


def span_numbers(
    header: bytes, span: tuple[int, int], shape: Any, narrow: type | None = None
) -> np.ndarray | None:
    """The numbers of a span, flat; None if it holds anything else or is not rectangular
    exactly as ``shape`` (nested data only: flat data may have any shape)."""
    start, end = span
    if header.find(b"[", start + 1, end) == -1:
        return flat_numbers(header, start + 1, end - 1, narrow)
    text = flattened(header[start:end], shape)
    return None if text is None else flat_numbers(text, 0, len(text), narrow)


def flattened(raw: bytes, shape: Any) -> bytes | None:
    """Nested data as flat text (brackets blanked) when it nests exactly as ``shape``.

    With the text then read as comma-separated numbers, three checks make the nesting
    valid JSON, rectangular as ``shape``: its brackets and commas are those of such an
    array, no ``[`` follows a number and no number follows a ``]``.
    """
    dims = _dims(shape)
    if dims is None:
        return None
    structure = raw.translate(None, NUMBER_BYTES + WHITESPACE)
    if len(structure) != _nested_length(dims) or structure != _nested(dims):
        return None
    view = np.frombuffer(raw, np.uint8)
    opens = np.flatnonzero(view == ord("["))[1:]  # the outer brackets end the scans below
    closes = np.flatnonzero(view == ord("]"))[:-1]
    before, after = _solid_byte(view, opens, -1), _solid_byte(view, closes, 1)
    if before is None or after is None or not np.isin(before, BEFORE_OPEN).all():
        return None
    return raw.translate(BRACKETS_AS_SPACES) if np.isin(after, AFTER_CLOSE).all() else None


def _solid_byte(view: np.ndarray, positions: np.ndarray, step: int) -> np.ndarray | None:
    """The first byte that is not whitespace from each position on (step -1: back); None
    beyond :data:`MAX_INDENT` blanks."""
    positions = positions + step
    for _ in range(MAX_INDENT):
        found = view[positions]
        blank = np.isin(found, SPACE_BYTES)
        if not blank.any():
            return found
        positions[blank] += step
    return None


def _dims(shape: Any) -> tuple[int, ...] | None:
    if not isinstance(shape, list) or not 2 <= len(shape) <= MAX_NESTING:
        return None
    if not all(type(d) is int and d >= 1 for d in shape):
        return None
    return tuple(shape)


def _nested_length(dims: tuple[int, ...]) -> int:
    """The length of :func:`_nested` of ``dims``, without building it."""
    length = dims[-1] + 1
    for size in reversed(dims[:-1]):
        length = 2 + size * length + size - 1
    return length


def _nested(dims: tuple[int, ...]) -> bytes:
    """The brackets and commas of a rectangular nested array, numbers left out."""
    text = b"[" + b"," * (dims[-1] - 1) + b"]"
    for size in reversed(dims[:-1]):
        text = b"[" + b",".join([text] * size) + b"]"
    return text


def flat_numbers(
    text: bytes, start: int, end: int, narrow: type | None = None
) -> np.ndarray | None:
    """Comma-separated JSON numbers in ``text[start:end]`` as float64 if any is a float,
    else int64 (as orjson and numpy make them); None if anything else is there.

    With ``narrow`` (float32), floats are stored at that precision as each chunk is read,
    rounded as a cast of the float64 array would round them: half the memory, no second
    pass. A value too large for it gives the float64 array instead, whose cast then names
    the value (JSON has no infinities, so an infinity here is an overflow).
    """
    floats = any(text.find(mark, start, end) != -1 for mark in FLOAT_BYTES)
    kind, dtype = ("d", np.float64) if floats else ("i", np.int64)
    stored = narrow if floats and narrow is not None else dtype
    parser, view = simdjson.Parser(), memoryview(text)
    try:
        if end - start <= CHUNK:
            values = _parse(parser, view[start:end], kind, dtype)
            return values if values.size else None
        out: np.ndarray = np.empty(_count(view[start:end], b",") + 1, stored)
        filled, first = 0, start
        with np.errstate(over="ignore"):
            while start < end:
                cut = text.find(b",", min(start + CHUNK, end), end)
                cut = end if cut == -1 else cut
                values = _parse(parser, view[start:cut], kind, dtype)
                if filled + values.size > out.size:
                    return None
                out[filled : filled + values.size] = values
                filled, start = filled + values.size, cut + 1
    except (ValueError, TypeError, RuntimeError):  # not a number, or one orjson reads otherwise
        return None
    if filled != out.size:
        return None  # a blank chunk held no number
    if stored is not dtype and np.isinf(out).any():
        return flat_numbers(text, first, end)
    return out


def _parse(parser: Any, numbers: memoryview, kind: str, dtype: type) -> np.ndarray:
    """Comma-separated numbers parsed as one JSON array: a copy, the parser free again."""
    return np.frombuffer(
        parser.parse(b"".join((b"[", numbers, b"]"))).as_buffer(of_type=kind), dtype
    )


def _count(text: memoryview, byte: bytes) -> int:
    """How often ``byte`` occurs, in blocks (numpy's compare beats bytes.count 5x)."""
    view = np.frombuffer(text, np.uint8)
    return sum(
        int(np.count_nonzero(view[i : i + CHUNK * 16] == byte[0]))
        for i in range(0, view.size, CHUNK * 16)
    )
