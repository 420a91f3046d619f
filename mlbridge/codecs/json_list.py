"""JSON nested arrays on the CAS endpoint, for R, Octave and shell clients."""

from __future__ import annotations

import json

import numpy as np

from ..errors import MLBridgeError, PayloadError
from .base import CasCodec, failure_fields
from .v2 import loads


class JsonListCodec(CasCodec):
    """A body such as ``[[0.0, 0.5], [1.0, 0.25]]``; replies alike."""

    media_type = "application/json"

    def sniff(self, body: bytes) -> bool:
        return body[:1] == b"["

    def decode_tensor(self, body: bytes) -> np.ndarray:
        data = loads(body)
        try:
            array = np.asarray(data, dtype=np.float64)
        except (ValueError, TypeError):
            raise PayloadError(
                "expected a rectangular nested JSON array of numbers, such as [[0.0, 0.5]]"
            ) from None
        return array

    def encode_tensor(self, array: np.ndarray) -> bytes:
        return json.dumps(array.tolist(), separators=(",", ":")).encode()

    def encode_error(self, error: MLBridgeError) -> bytes:
        fields = failure_fields(error)
        body = {"error": error.message, "code": fields["Code"], "status": fields["Status"]}
        return json.dumps(body).encode()
