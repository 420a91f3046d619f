"""Test-only WXF (``BinarySerialize``/``BinaryDeserialize``) over Mathics3 expressions.

Written from the WXF specification (tutorial/WXFFormatDescription), independently of both
the server's codec and ``wolframclient``, so that the tests can hold all three against each
other. It covers what MLBridge sends and receives: machine integers and reals, strings,
symbols, functions, associations, byte arrays, packed and numeric arrays. System` symbols
are written without their context, as BinarySerialize writes them.
"""

from __future__ import annotations

import struct

import numpy as np
from mathics.core.atoms import ByteArray, Integer, NumericArray, Real, String
from mathics.core.expression import Expression
from mathics.core.list import ListExpression
from mathics.core.symbols import Symbol

HEADER = b"8:"
ARRAY_TYPES = {  # WXF array type byte -> numpy dtype (little-endian)
    0x00: "<i1",
    0x01: "<i2",
    0x02: "<i4",
    0x03: "<i8",
    0x10: "<u1",
    0x11: "<u2",
    0x12: "<u4",
    0x13: "<u8",
    0x22: "<f4",
    0x23: "<f8",
}
TYPE_BYTES = {np.dtype(dtype).newbyteorder("="): code for code, dtype in ARRAY_TYPES.items()}
INTEGER_TOKENS = ((b"C", "<b", 2**7), (b"j", "<h", 2**15), (b"i", "<i", 2**31), (b"L", "<q", 2**63))
PACKED, NUMERIC = 0xC1, 0xC2
SYSTEM = "System`"


class WXFError(ValueError):
    """Bytes that are not WXF, or an expression this stand-in cannot write."""


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


# ---- writing ------------------------------------------------------------------------------


def serialize(expr) -> bytes:
    """BinarySerialize[expr]: the ``8:`` header, then the expression's tokens."""
    return HEADER + _write(expr)


def _write(expr) -> bytes:
    if isinstance(expr, NumericArray):
        return _array(NUMERIC, expr.value)
    if isinstance(expr, ByteArray):
        return b"B" + varint(len(expr.value)) + bytes(expr.value)
    if isinstance(expr, Integer):
        return _integer(expr.value)
    if isinstance(expr, Real):
        if not expr.is_machine_precision():
            raise WXFError("arbitrary-precision reals are not written by this stand-in")
        return b"r" + struct.pack("<d", expr.value)
    if isinstance(expr, String):
        return _text(b"S", expr.value)
    if isinstance(expr, Symbol):
        name = expr.get_name()
        return _text(b"s", name[len(SYSTEM) :] if name.startswith(SYSTEM) else name)
    if expr.has_form("Association", None):
        return b"A" + varint(len(expr.elements)) + b"".join(map(_rule, expr.elements))
    head, elements = expr.get_head(), expr.elements
    return b"f" + varint(len(elements)) + _write(head) + b"".join(map(_write, elements))


def _rule(rule) -> bytes:
    token = b"-" if rule.has_form("Rule", 2) else b":"
    return token + _write(rule.elements[0]) + _write(rule.elements[1])


def _integer(value: int) -> bytes:
    for token, layout, bound in INTEGER_TOKENS:
        if -bound <= value < bound:
            return token + struct.pack(layout, value)
    return _text(b"I", str(value))


def _text(token: bytes, text: str) -> bytes:
    data = text.encode("utf-8")
    return token + varint(len(data)) + data


def _array(token: int, array: np.ndarray) -> bytes:
    code = TYPE_BYTES[array.dtype.newbyteorder("=")]
    dims = b"".join(varint(d) for d in array.shape)
    data = np.ascontiguousarray(array, ARRAY_TYPES[code]).tobytes()
    return bytes((token, code)) + varint(array.ndim) + dims + data


# ---- reading ------------------------------------------------------------------------------


def deserialize(data: bytes):
    """BinaryDeserialize[bytes]: the expression, unevaluated; WXFError if it is not WXF."""
    if not data.startswith(HEADER):
        raise WXFError(f"not WXF: the bytes start with {bytes(data[:4])!r}")
    reader = _Reader(bytes(data), len(HEADER))
    expr = reader.read()
    if reader.pos != len(reader.data):
        raise WXFError(f"{len(reader.data) - reader.pos} bytes after the expression")
    return expr


class _Reader:
    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos

    def take(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise WXFError(f"truncated WXF at byte {self.pos}")
        self.pos += size
        return self.data[self.pos - size : self.pos]

    def varint(self) -> int:
        value, shift = 0, 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    def text(self) -> str:
        return self.take(self.varint()).decode("utf-8")

    def read(self):
        token = self.take(1)
        for mark, layout, _ in INTEGER_TOKENS:
            if token == mark:
                return Integer(struct.unpack(layout, self.take(struct.calcsize(layout)))[0])
        if token == b"r":
            return Real(struct.unpack("<d", self.take(8))[0])
        if token == b"I":
            return Integer(int(self.text()))
        if token == b"S":
            return String(self.text())
        if token == b"s":
            name = self.text()
            return Symbol(name if "`" in name else SYSTEM + name)
        if token == b"B":
            return ByteArray(bytearray(self.take(self.varint())))
        if token == b"f":
            count = self.varint()
            head = self.read()
            return Expression(head, *[self.read() for _ in range(count)])
        if token == b"A":
            return Expression(
                Symbol("System`Association"), *[self._rule() for _ in range(self.varint())]
            )
        if token[0] in (PACKED, NUMERIC):
            return self._array(token[0])
        raise WXFError(f"unknown WXF token 0x{token[0]:02x} at byte {self.pos - 1}")

    def _rule(self):
        token = self.take(1)
        if token not in (b"-", b":"):
            raise WXFError(f"expected a rule in an association at byte {self.pos - 1}")
        head = "System`Rule" if token == b"-" else "System`RuleDelayed"
        return Expression(Symbol(head), self.read(), self.read())

    def _array(self, token: int):
        code = self.take(1)[0]
        if code not in ARRAY_TYPES:
            raise WXFError(f"unknown array type 0x{code:02x}")
        shape = [self.varint() for _ in range(self.varint())]
        dtype = np.dtype(ARRAY_TYPES[code])
        size = int(np.prod(shape)) * dtype.itemsize
        array = np.frombuffer(self.take(size), dtype).reshape(shape).astype(dtype.newbyteorder("="))
        return NumericArray(array) if token == NUMERIC else _nested(array)


def _nested(array: np.ndarray):
    """A packed array as the nested List of machine numbers it stands for."""
    if array.ndim == 0:
        value = array.item()
        return Integer(value) if isinstance(value, int) else Real(value)
    return ListExpression(*[_nested(row) for row in array])
