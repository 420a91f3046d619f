"""WXF, the Wolfram Exchange Format (``BinarySerialize``), for the CAS endpoint.

The decoder is strict and bounded: it reads one numeric array — a
NumericArray, a PackedArray or a rectangular nested ``List`` of numbers —
from an ``8:`` or zlib-compressed ``8C:`` body, checks every declared
length against the bytes that remain before it allocates anything, and
reports any other expression as a :class:`~mlbridge.errors.PayloadError`
that says what it found, at which byte, and what it expected.

Bounds: a tensor of more than ``max_values`` numbers is refused as soon as
its dimensions are known (for ``8C:``, from the first inflated bytes, before
the rest is inflated); inflation stops at ``max_decompressed`` bytes and
writes into one growing buffer; a List walked token by token (mixed number
types, or many small Lists) may take at most :data:`MAX_STEPS` steps, so a
small body cannot buy minutes of CPU. Real64 and Real32 NaN and infinities
come through (the inference layer refuses them unless the model opts in); a
BigReal beyond a 64-bit float is an error.
"""

from __future__ import annotations

import re
import struct
import zlib
from math import prod

import numpy as np

from ..errors import MLBridgeError, PayloadError
from .base import (
    BODY_BYTES_PER_VALUE,
    DEFAULT_MAX_BODY_BYTES,
    FAILURE_TAG,
    CasCodec,
    check_values,
    failure_fields,
    max_values_for,
)

MEDIA_TYPE = "application/vnd.wolfram.wxf"
HEADER = b"8:"
COMPRESSED_HEADER = b"8C:"
DEFAULT_MAX_DECOMPRESSED = DEFAULT_MAX_BODY_BYTES
MAX_RANK = 16  # also the deepest List nesting read
MAX_VARINT_BYTES = 10  # 64 bits in 7-bit groups
MAX_STEPS = 1 << 20  # Lists and one-by-one numbers per body: about a second of Python
MAX_ASSOCIATION_RULES = 16
INFLATE_STEP = 1 << 20  # bytes inflated per call
HEADER_PEEK = 1 << 12  # inflated bytes enough to read any tensor's dimensions

FUNCTION, SYMBOL, STRING, ASSOCIATION, RULE = b"f", b"s", b"S", b"A", b"-"
PACKED_ARRAY, NUMERIC_ARRAY = 0xC1, 0xC2
BIG_INTEGER, BIG_REAL = ord("I"), ord("R")
LIST_HEADS = (b"List", b"System`List")

# array type code -> (Wolfram name, little-endian numpy dtype)
ARRAY_TYPES: dict[int, tuple[str, np.dtype]] = {
    code: (name, np.dtype(dtype))
    for code, name, dtype in [
        (0x00, "Integer8", "<i1"),
        (0x01, "Integer16", "<i2"),
        (0x02, "Integer32", "<i4"),
        (0x03, "Integer64", "<i8"),
        (0x10, "UnsignedInteger8", "<u1"),
        (0x11, "UnsignedInteger16", "<u2"),
        (0x12, "UnsignedInteger32", "<u4"),
        (0x13, "UnsignedInteger64", "<u8"),
        (0x22, "Real32", "<f4"),
        (0x23, "Real64", "<f8"),
    ]
}
ARRAY_CODES = {dtype.newbyteorder("="): code for code, (_, dtype) in ARRAY_TYPES.items()}
PACKABLE_CODES = frozenset((0x00, 0x01, 0x02, 0x03, 0x22, 0x23))
COMPLEX_TYPES = {0x33: "ComplexReal32", 0x34: "ComplexReal64"}

# number tokens: byte -> (Wolfram name, little-endian payload dtype or None for text)
NUMBER_TOKENS_ALL = {
    ord("C"): ("Integer8", "<i1"),
    ord("j"): ("Integer16", "<i2"),
    ord("i"): ("Integer32", "<i4"),
    ord("L"): ("Integer64", "<i8"),
    ord("r"): ("Real64", "<f8"),
    BIG_INTEGER: ("BigInteger", None),
    BIG_REAL: ("BigReal", None),
}
NUMBER_TOKENS = {t: np.dtype(d) for t, (_, d) in NUMBER_TOKENS_ALL.items() if d is not None}
TOKEN_NAMES = {
    **{t: name for t, (name, _) in NUMBER_TOKENS_ALL.items()},
    **{ord(t): name for t, name in [("f", "Function"), ("s", "Symbol"), ("S", "String")]},
    **{ord(t): name for t, name in [("B", "ByteArray"), ("A", "Association"), ("-", "Rule")]},
    ord(":"): "RuleDelayed",
    PACKED_ARRAY: "PackedArray",
    NUMERIC_ARRAY: "NumericArray",
}
BIG_INTEGER_TEXT = re.compile(rb"[+-]?\d+")
INT64_DIGITS = 19
# InputForm reals: mantissa, then an optional `precision or ``accuracy mark, then *^exponent
BIG_REAL_TEXT = re.compile(
    rb"([+-]?(?:\d+\.?\d*|\.\d+))(?:``?[+-]?\d*\.?\d*)?(?:\*\^([+-]?\d{1,6}))?"
)
ARRAY_EXPECTED = "a NumericArray, a PackedArray or a List of numbers"


class _Reader:
    """A cursor over a WXF token stream; every read is bounds-checked."""

    __slots__ = ("data", "max_values", "origin", "pos", "steps")

    def __init__(self, data: bytes | bytearray, pos: int, origin: str, max_values: int = 0) -> None:
        self.data, self.pos, self.origin = data, pos, origin
        self.max_values = max_values or max_values_for(DEFAULT_MAX_BODY_BYTES)
        self.steps = 0  # Lists entered and numbers read one by one

    def step(self, count: int = 1) -> None:
        """Count Python-level work; a body that needs too much is refused."""
        self.steps += count
        if self.steps > MAX_STEPS:
            raise PayloadError(
                f"WXF at {self.where()}: more than {MAX_STEPS} Lists and one-by-one numbers; "
                "send a NumericArray or a packed array (one number type) instead"
            )

    def where(self, pos: int | None = None) -> str:
        return f"byte {self.pos if pos is None else pos}{self.origin}"

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def byte(self, what: str) -> int:
        if self.pos >= len(self.data):
            raise PayloadError(f"truncated WXF: the body ends at {self.where()}, inside {what}")
        self.pos += 1
        return self.data[self.pos - 1]

    def peek(self, what: str) -> int:
        token = self.byte(what)
        self.pos -= 1
        return token

    def take(self, size: int, what: str) -> bytes:
        if size > self.remaining:
            raise PayloadError(
                f"truncated WXF: {what} at {self.where()} declares {size} bytes "
                f"but only {self.remaining} remain"
            )
        self.pos += size
        return bytes(self.data[self.pos - size : self.pos])

    def varint(self, what: str) -> int:
        start, value = self.pos, 0
        for index in range(MAX_VARINT_BYTES):
            byte = self.byte(what)
            value |= (byte & 0x7F) << (7 * index)
            if byte < 0x80:
                if value >> 64:
                    where = self.where(start)
                    raise PayloadError(f"WXF varint for {what} at {where} exceeds 64 bits")
                return value
        raise PayloadError(
            f"WXF varint for {what} at {self.where(start)} is longer than {MAX_VARINT_BYTES} bytes"
        )

    def describe(self, pos: int) -> str:
        """Name the expression whose token is at ``pos``, for error messages."""
        token = self.data[pos]
        name = TOKEN_NAMES.get(token)
        if name is None:
            return f"unknown token 0x{token:02x}"
        if token in (ord("s"), ord("S")):
            probe = _Reader(self.data, pos + 1, self.origin)
            try:
                text = probe.take(min(probe.varint(name), 40), name)
                return f"{name} {text.decode('utf-8', 'replace')!r}"
            except PayloadError:
                return name
        return name


class WxfCodec(CasCodec):
    """Wolfram Exchange Format: what ``BinarySerialize`` writes and ``BinaryDeserialize`` reads."""

    media_type = MEDIA_TYPE

    def __init__(
        self, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED, max_values: int | None = None
    ) -> None:
        self.max_decompressed = max_decompressed
        self.max_values = max_values or max_values_for(max_decompressed)

    def sniff(self, body: bytes) -> bool:
        """Whether ``body`` starts with a WXF header."""
        return body.startswith((HEADER, COMPRESSED_HEADER))

    def decode_cost(self, body: bytes) -> int:
        """A packed array is a view of the body: cheap. A List is walked in Python, so it
        costs as if each number took two bytes; a compressed body as if it inflated fully."""
        if body.startswith(COMPRESSED_HEADER):
            return self.max_values
        if body[len(HEADER) : len(HEADER) + 1] in (b"\xc1", b"\xc2"):
            return len(body) // BODY_BYTES_PER_VALUE
        return len(body) // 2

    def decode_tensor(self, body: bytes) -> np.ndarray:
        """Read one numeric array from a WXF body; anything else is a PayloadError."""
        reader = self._open(bytes(body))
        array = _read_array(reader)
        if reader.remaining:
            raise PayloadError(
                f"WXF has {reader.remaining} trailing bytes at {reader.where()}; "
                "expected the body to end after one expression"
            )
        return array

    def decode_arguments(self, body: bytes) -> dict[str, np.ndarray]:
        """Read ``<|"x" -> array, ...|>`` (string keys), or one bare array as ``x``."""
        reader = self._open(bytes(body))
        if reader.peek("the expression") != ASSOCIATION[0]:
            arguments = {"x": _read_array(reader)}
        else:
            arguments = _read_association(reader)
        if reader.remaining:
            raise PayloadError(
                f"WXF has {reader.remaining} trailing bytes at {reader.where()}; "
                "expected the body to end after one expression"
            )
        return arguments

    def encode_tensor(self, array: np.ndarray) -> bytes:
        """Write ``array`` as an uncompressed WXF NumericArray."""
        return HEADER + _encode_array(np.asarray(array))

    def encode_error(self, error: MLBridgeError) -> bytes:
        """Write ``Failure["MLBridge", <|"MessageTemplate" -> ..., ...|>]`` as WXF."""
        fields = failure_fields(error)
        rules = b"".join(RULE + _encode_atom(k) + _encode_atom(v) for k, v in fields.items())
        association = ASSOCIATION + _varint(len(fields)) + rules
        head = _encode_symbol("Failure")
        return HEADER + FUNCTION + _varint(2) + head + _encode_atom(FAILURE_TAG) + association

    def _open(self, body: bytes) -> _Reader:
        if body.startswith(HEADER):
            return _Reader(body, len(HEADER), "", self.max_values)
        if body.startswith(COMPRESSED_HEADER):
            data, start = _inflate(
                body[len(COMPRESSED_HEADER) :], self.max_decompressed, self.max_values
            )
            return _Reader(data, start, " of the decompressed 8C: payload", self.max_values)
        raise PayloadError(f"not WXF: expected the header b'8:' or b'8C:', found {body[:8]!r}")


def _inflate(payload: bytes, limit: int, max_values: int) -> tuple[bytearray, int]:
    """Decompress an ``8C:`` payload into one buffer, and where in it the payload starts.

    Refuses to produce more than ``limit`` bytes, and refuses as soon as the
    first bytes declare more than ``max_values`` numbers. A packed array's
    data is placed at an aligned offset, so that it is served without a copy.
    """
    inflater, data = zlib.decompressobj(), bytearray()
    pending, start = payload, -1
    try:
        while not inflater.eof and len(data) - max(start, 0) <= limit:
            size = limit + 1 - len(data) + max(start, 0)
            chunk = inflater.decompress(pending, min(INFLATE_STEP, size))
            pending = inflater.unconsumed_tail
            if not chunk:
                break
            data += chunk
            if start < 0 and (len(data) >= HEADER_PEEK or inflater.eof):
                start = _check_declared(data, max_values)
                data[:0] = bytes(start)
    except zlib.error as exc:
        raise PayloadError(f"WXF 8C: payload is not valid zlib data ({exc})") from None
    start = max(start, 0)
    if len(data) - start > limit:
        raise PayloadError(f"WXF 8C: payload decompresses to more than {limit} bytes (the limit)")
    if not inflater.eof:
        raise PayloadError("truncated WXF: the 8C: zlib stream ends before its end marker")
    if inflater.unused_data:
        raise PayloadError(
            f"WXF 8C: has {len(inflater.unused_data)} trailing bytes after the zlib stream"
        )
    return data, start


def _check_declared(head: bytearray, max_values: int) -> int:
    """Refuse a tensor whose first bytes declare more than ``max_values`` numbers; return
    the padding that aligns a packed array's data to 8 bytes (0 for anything else).

    Reads a packed array's dimensions, or a List's lengths down its first
    path; whatever cannot be read from ``head`` alone is left to the decoder.
    """
    reader = _Reader(bytes(head[:HEADER_PEEK]), 0, " of the decompressed 8C: payload", max_values)
    padding = 0
    try:
        token, count = reader.byte("the expression"), 1
        if token in (NUMERIC_ARRAY, PACKED_ARRAY):
            reader.byte("the array type")
            count = prod(_read_dims(reader, TOKEN_NAMES[token]))
            padding = -reader.pos % 8
        while token == FUNCTION[0]:
            count *= reader.varint("a List length")
            _read_list_head(reader, 0)
            token = reader.byte("a List element") if count else 0
    except PayloadError:
        return 0
    check_values(count, max_values, "the WXF tensor")
    return padding


def _read_association(reader: _Reader) -> dict[str, np.ndarray]:
    reader.byte("an Association")
    count = reader.varint("an Association length")
    if count > reader.remaining:
        raise PayloadError(f"truncated WXF: Association declares {count} rules")
    if count > MAX_ASSOCIATION_RULES:
        raise PayloadError(
            f"WXF Association of {count} rules; at most {MAX_ASSOCIATION_RULES} are accepted"
        )
    arguments: dict[str, np.ndarray] = {}
    for _ in range(count):
        start = reader.pos
        if reader.byte("a rule") != RULE[0] or reader.byte("a rule key") != STRING[0]:
            raise PayloadError(
                f'WXF Association rule at {reader.where(start)}: expected "name" -> array'
            )
        key = reader.take(reader.varint("a String length"), "a String").decode("utf-8", "replace")
        if key in arguments:
            raise PayloadError(
                f"WXF Association key {key!r} at {reader.where(start)} appears twice; "
                "expected each once"
            )
        arguments[key] = _read_value(reader)
    return arguments


def _read_value(reader: _Reader) -> np.ndarray:
    """An array, or one number (a cotangent of a scalar output)."""
    if reader.peek("a value") not in NUMBER_TOKENS_ALL:
        return _read_array(reader)
    return np.asarray(_read_number(reader, 0), dtype=np.float64).reshape(())


def _read_array(reader: _Reader) -> np.ndarray:
    start = reader.pos
    token = reader.byte("the expression")
    if token in (NUMERIC_ARRAY, PACKED_ARRAY):
        return _read_packed(reader, token)
    if token == ord("f"):
        return _read_list(reader, start)
    raise PayloadError(
        f"WXF: found {reader.describe(start)} at {reader.where(start)}; expected {ARRAY_EXPECTED}"
    )


def _read_packed(reader: _Reader, token: int) -> np.ndarray:
    kind = TOKEN_NAMES[token]
    code_pos = reader.pos
    code = reader.byte(f"the {kind} type")
    if code in COMPLEX_TYPES:
        raise PayloadError(
            f"WXF {kind} of {COMPLEX_TYPES[code]} at {reader.where(code_pos)} is not supported; "
            "expected a real or integer type"
        )
    if code not in ARRAY_TYPES or (token == PACKED_ARRAY and code not in PACKABLE_CODES):
        allowed = PACKABLE_CODES if token == PACKED_ARRAY else ARRAY_TYPES
        names = ", ".join(ARRAY_TYPES[c][0] for c in sorted(allowed))
        raise PayloadError(
            f"WXF {kind} type 0x{code:02x} at {reader.where(code_pos)} is not one of {names}"
        )
    name, dtype = ARRAY_TYPES[code]
    shape = _read_dims(reader, kind)
    count = prod(shape)
    if count * dtype.itemsize > reader.remaining:
        raise PayloadError(
            f"truncated WXF: {kind} declares {count} {name} values "
            f"({count * dtype.itemsize} bytes) but only {reader.remaining} bytes remain"
        )
    check_values(count, reader.max_values, f"the WXF {kind}")
    array = np.frombuffer(reader.data, dtype, count, reader.pos).reshape(shape)
    reader.pos += count * dtype.itemsize
    return _native(array)


def _read_dims(reader: _Reader, kind: str) -> tuple[int, ...]:
    rank_pos = reader.pos
    rank = reader.varint(f"the {kind} rank")
    if not 1 <= rank <= MAX_RANK:
        raise PayloadError(
            f"WXF {kind} rank {rank} at {reader.where(rank_pos)}; expected 1 to {MAX_RANK}"
        )
    dims = []
    for axis in range(rank):
        dim_pos = reader.pos
        dim = reader.varint(f"the {kind} dimensions")
        if dim == 0:
            raise PayloadError(
                f"WXF {kind} dimension {axis} is 0 at {reader.where(dim_pos)}; expected >= 1"
            )
        dims.append(dim)
    return tuple(dims)


def _native(array: np.ndarray) -> np.ndarray:
    """Native byte order, aligned; a view of the body whenever that is already so."""
    array = array.astype(array.dtype.newbyteorder("="), copy=False)
    return array if array.flags.aligned else array.copy()


class _ListShape:
    """The dimensions a nested List has shown so far, and its leaves as flat chunks."""

    __slots__ = ("chunks", "dims", "rank")

    def __init__(self) -> None:
        self.dims: list[int] = []
        self.rank: int | None = None  # depth of the leaves, once one is seen
        self.chunks: list[np.ndarray] = []

    def enter(self, depth: int, length: int, reader: _Reader, pos: int) -> None:
        if self.rank is not None and depth >= self.rank:
            raise PayloadError(
                f"ragged WXF List at depth {depth}: found a List at {reader.where(pos)} "
                "where the other elements are numbers"
            )
        if depth == len(self.dims):
            self.dims.append(length)
        elif self.dims[depth] != length:
            raise PayloadError(
                f"ragged WXF List at depth {depth}: a List of length {self.dims[depth]} "
                f"then one of length {length} at {reader.where(pos)}; expected a rectangular array"
            )

    def leaves_at(self, depth: int, reader: _Reader, pos: int) -> None:
        if self.rank is None and depth == len(self.dims):
            self.rank = depth
            check_values(prod(self.dims), reader.max_values, "the WXF List")
        if self.rank != depth:
            raise PayloadError(
                f"ragged WXF List at depth {depth}: found a number at {reader.where(pos)} "
                f"where the other elements are Lists of length {self.dims[depth]}"
            )


def _read_list(reader: _Reader, start: int) -> np.ndarray:
    shape = _ListShape()
    _read_list_body(reader, start, 0, shape)
    if not shape.chunks:
        return np.zeros(shape.dims, np.float64)
    wide = np.float64 if any(chunk.dtype.kind == "f" for chunk in shape.chunks) else np.int64
    if len(shape.chunks) == 1:
        return shape.chunks[0].astype(wide, copy=False).reshape(shape.dims)
    return np.concatenate(shape.chunks, dtype=wide).reshape(shape.dims)


def _read_list_body(reader: _Reader, start: int, depth: int, shape: _ListShape) -> None:
    if depth >= MAX_RANK:
        raise PayloadError(f"WXF List nesting at {reader.where(start)} is deeper than {MAX_RANK}")
    reader.step()
    length = reader.varint("a List length")
    if length > reader.remaining:
        raise PayloadError(
            f"truncated WXF: List at {reader.where(start)} declares {length} elements "
            f"but only {reader.remaining} bytes remain"
        )
    _read_list_head(reader, start)
    shape.enter(depth, length, reader, start)
    if length == 0:
        return
    first = reader.pos
    if reader.peek("a List element") != ord("f"):
        shape.leaves_at(depth + 1, reader, first)
        shape.chunks.append(_read_numbers(reader, length, depth + 1))
        return
    for _ in range(length):
        element = reader.pos
        if reader.byte("a List element") != ord("f"):
            raise PayloadError(
                f"ragged WXF List at depth {depth + 1}: found {reader.describe(element)} at "
                f"{reader.where(element)} where the other elements are Lists"
            )
        _read_list_body(reader, element, depth + 1, shape)


def _read_list_head(reader: _Reader, start: int) -> None:
    head_pos = reader.pos
    if reader.byte("a Function head") == ord("s"):
        name = reader.take(reader.varint("a Symbol name"), "a Symbol name")
        if name in LIST_HEADS:
            return
    raise PayloadError(
        f"WXF Function at {reader.where(start)} has head {reader.describe(head_pos)}; "
        f"expected {ARRAY_EXPECTED} (head Symbol 'List')"
    )


def _read_numbers(reader: _Reader, count: int, depth: int) -> np.ndarray:
    """Read ``count`` number tokens: a vectorised path when they share one fixed-size token.

    The values keep their token's type (``Integer8`` stays int8) until the
    whole List is assembled, so a big List costs its final array once.
    """
    token = reader.peek("a number")
    dtype = NUMBER_TOKENS.get(token)
    if dtype is not None:
        stride = 1 + dtype.itemsize
        if count * stride <= reader.remaining:
            rows = np.frombuffer(reader.data, np.uint8, count * stride, reader.pos)
            rows = rows.reshape(count, stride)
            if (rows[:, 0] == token).all():
                reader.pos += count * stride
                return np.ascontiguousarray(rows[:, 1:]).view(dtype).reshape(count)
    reader.step(count)
    numbers = [_read_number(reader, depth) for _ in range(count)]
    return np.array(numbers, np.float64 if any(isinstance(n, float) for n in numbers) else np.int64)


def _read_number(reader: _Reader, depth: int) -> int | float:
    start = reader.pos
    token = reader.byte("a number")
    dtype = NUMBER_TOKENS.get(token)
    if dtype is not None:
        return np.frombuffer(reader.take(dtype.itemsize, TOKEN_NAMES[token]), dtype)[0].item()
    if token in (BIG_INTEGER, BIG_REAL):
        return _read_big_number(reader, token, start)
    if token == ord("f"):
        raise PayloadError(
            f"ragged WXF List at depth {depth}: found a List at {reader.where(start)} "
            "where the other elements are numbers"
        )
    raise PayloadError(
        f"WXF: found {reader.describe(start)} at {reader.where(start)} inside a List; "
        "expected a number (Integer or Real)"
    )


def _read_big_number(reader: _Reader, token: int, start: int) -> int | float:
    kind = TOKEN_NAMES[token]
    text = reader.take(reader.varint(f"the {kind} length"), kind)
    if token == BIG_INTEGER and BIG_INTEGER_TEXT.fullmatch(text):
        digits = len(text.lstrip(b"+-").lstrip(b"0"))
        value = int(text) if digits <= INT64_DIGITS else None  # int() refuses 4,300+ digits
        if value is not None and -(1 << 63) <= value < (1 << 63):
            return value
        shown = text.decode() if len(text) <= 40 else f"of {digits} digits"
        raise PayloadError(
            f"WXF BigInteger {shown} at {reader.where(start)} does not fit in 64 bits"
        )
    match = BIG_REAL_TEXT.fullmatch(text) if token == BIG_REAL else None
    if match:
        real = float(match[1] + b"e" + (match[2] or b"0"))
        if real in (float("inf"), float("-inf")):
            raise PayloadError(
                f"WXF BigReal {text[:40].decode()} at {reader.where(start)} is too large "
                "for a 64-bit float; expected magnitudes up to 1.79*^308"
            )
        return real
    raise PayloadError(f"WXF {kind} at {reader.where(start)} has malformed digits {text[:40]!r}")


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _encode_symbol(name: str) -> bytes:
    raw = name.encode()
    return SYMBOL + _varint(len(raw)) + raw


def _encode_atom(value: object) -> bytes:
    if isinstance(value, str):
        raw = value.encode()
        return STRING + _varint(len(raw)) + raw
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"WXF atom must be a str, int or float; got {type(value).__name__}")
    if isinstance(value, float):
        return b"r" + struct.pack("<d", value)
    return b"L" + struct.pack("<q", value)


def _encode_array(array: np.ndarray) -> bytes:
    if array.dtype == np.bool_ or array.dtype == np.float16:
        array = array.astype(np.int8 if array.dtype == np.bool_ else np.float32)
    code = ARRAY_CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise TypeError(f"WXF cannot hold a {array.dtype} array; expected a real or integer dtype")
    if array.ndim == 0:
        return _encode_atom(array.item())
    if array.size == 0:
        return _encode_empty(array.shape)
    dims = b"".join(_varint(d) for d in array.shape)
    data = np.ascontiguousarray(array, ARRAY_TYPES[code][1]).tobytes()
    return bytes((NUMERIC_ARRAY, code)) + _varint(array.ndim) + dims + data


def _encode_empty(shape: tuple[int, ...]) -> bytes:
    """An empty array as nested Lists, since a NumericArray cannot have a zero dimension."""
    head = FUNCTION + _varint(shape[0]) + _encode_symbol("List")
    return head + (_encode_empty(shape[1:]) * shape[0] if shape[0] else b"")


_DEFAULT = WxfCodec()


def dumps(array: np.ndarray) -> bytes:
    """Encode ``array`` as a WXF NumericArray (``8:`` header, uncompressed)."""
    return _DEFAULT.encode_tensor(array)


def loads(body: bytes) -> np.ndarray:
    """Decode one numeric array from a WXF body."""
    return _DEFAULT.decode_tensor(body)
