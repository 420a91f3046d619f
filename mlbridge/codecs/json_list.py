"""JSON nested arrays on the CAS endpoint, for R, Octave and shell clients.

Named arguments (the gradient route's ``x`` and ``cotangent``) come as a JSON
object of arrays: ``{"x": [2, 4, 8], "cotangent": 1}``.
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import MLBridgeError, PayloadError
from .base import CasCodec, failure_fields
from .v2 import dumps, json_values, loads

OBJECT_START = re.compile(rb'\{\s*"')  # a Mathematica list never holds a string


class JsonListCodec(CasCodec):
    """A body such as ``[[0.0, 0.5], [1.0, 0.25]]``; replies alike."""

    media_type = "application/json"

    def sniff(self, body: bytes) -> bool:
        return body[:1] == b"[" or OBJECT_START.match(body) is not None

    def decode_tensor(self, body: bytes) -> np.ndarray:
        return _numbers(loads(body), "the body")

    def decode_arguments(self, body: bytes) -> dict[str, np.ndarray]:
        document = loads(body)
        if not isinstance(document, dict):
            return {"x": _numbers(document, "the body")}
        return {str(name): _numbers(value, repr(name)) for name, value in document.items()}

    def encode_tensor(self, array: np.ndarray) -> bytes:
        return dumps(json_values(array))

    def encode_error(self, error: MLBridgeError) -> bytes:
        fields = failure_fields(error)
        body = {"error": error.message, "code": fields["Code"], "status": fields["Status"]}
        return dumps(body)


def _numbers(data: object, where: str) -> np.ndarray:
    try:
        return np.asarray(data, dtype=np.float64)
    except (ValueError, TypeError):
        raise PayloadError(
            f"{where}: expected a number or a rectangular nested JSON array of numbers, "
            "such as [[0.0, 0.5]]"
        ) from None
