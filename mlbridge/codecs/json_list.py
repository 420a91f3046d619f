"""JSON nested arrays on the CAS endpoint, for R, Octave and shell clients.

Named arguments (the gradient route's ``x`` and ``cotangent``) come as a JSON
object of arrays: ``{"x": [2, 4, 8], "cotangent": 1}``. Numbers are strict:
JSON has no NaN or Infinity, a number beyond a 64-bit float is refused by the
parser, and strings are not numbers (``["1"]`` is an error).
"""

from __future__ import annotations

import re
from math import prod

import numpy as np

from ..errors import MLBridgeError, PayloadError
from .base import DEFAULT_MAX_VALUES, CasCodec, check_values, failure_fields
from .json_tensors import BRACKETS_AS_SPACES, flat_numbers
from .mathematica import fast_shape, skeleton_table
from .v2 import PLAIN_JSON_MAX, dumps, json_values, loads

OBJECT_START = re.compile(rb'\{\s*"')  # a Mathematica list never holds a string
MAX_ARGUMENTS = 16
DIRECT_MIN = 512  # bytes from which simdjson beats orjson plus numpy
JSON_SKELETON = skeleton_table(b"0123456789.+-eE", lists=b"[]")
EXPECTED = "a number or a rectangular nested JSON array of numbers, such as [[0.0, 0.5]]"


class JsonListCodec(CasCodec):
    """A body such as ``[[0.0, 0.5], [1.0, 0.25]]``; replies alike."""

    media_type = "application/json"

    def __init__(self, max_values: int = DEFAULT_MAX_VALUES) -> None:
        self.max_values = max_values

    def sniff(self, body: bytes) -> bool:
        return body[:1] == b"[" or OBJECT_START.match(body) is not None

    def decode_tensor(self, body: bytes) -> np.ndarray:
        array = self._read_directly(body)
        if array is not None:
            return array
        if len(body) > PLAIN_JSON_MAX:
            raise PayloadError(
                f"a JSON body over {PLAIN_JSON_MAX >> 20} MiB must be a rectangular nested "
                f"array of numbers; this one is not ({EXPECTED}): send smaller requests"
            )
        return self._numbers(loads(body), "the body", strings=b'"' in body)

    def _read_directly(self, body: bytes) -> np.ndarray | None:
        """A rectangular array of numbers read by simdjson, no Python object per number
        (the skeleton check of the Mathematica codec); None to read it the plain way."""
        if len(body) < DIRECT_MIN:
            return None
        text = body.strip()
        shape = fast_shape(text, JSON_SKELETON)
        if shape is None:
            return None
        check_values(prod(shape), self.max_values, "the body")
        values = flat_numbers(text.translate(BRACKETS_AS_SPACES), 0, len(text))
        if values is None or values.size != prod(shape):
            return None
        return values.astype(np.float64, copy=False).reshape(shape)

    def decode_arguments(self, body: bytes) -> dict[str, np.ndarray]:
        document = loads(body)
        if not isinstance(document, dict):
            return {"x": self._numbers(document, "the body", strings=b'"' in body)}
        if len(document) > MAX_ARGUMENTS:
            raise PayloadError(f"a JSON object of at most {MAX_ARGUMENTS} arguments is accepted")
        return {str(name): self._numbers(value, repr(name)) for name, value in document.items()}

    def encode_tensor(self, array: np.ndarray) -> bytes:
        return dumps(json_values(array))

    def encode_error(self, error: MLBridgeError) -> bytes:
        fields = failure_fields(error)
        body = {"error": error.message, "code": fields["Code"], "status": fields["Status"]}
        return dumps(body)

    def _numbers(self, data: object, where: str, strings: bool = True) -> np.ndarray:
        """The numbers as float64; ``strings`` False says the body has none (no ``"``), which
        spares the check of each value's type."""
        try:
            array = np.asarray(data) if strings else np.asarray(data, dtype=np.float64)
        except (ValueError, TypeError, OverflowError):
            raise PayloadError(f"{where}: expected {EXPECTED}") from None
        if array.dtype.kind not in "biuf":
            raise PayloadError(f"{where}: expected {EXPECTED}; found {_kind(array)}")
        check_values(array.size, self.max_values, where)
        return array.astype(np.float64, copy=False)


def _kind(array: np.ndarray) -> str:
    return "strings" if array.dtype.kind in "US" else "values that are not numbers"
