"""The codec interface of the CAS endpoint (``POST /{model}``).

A CAS codec turns a request body into one numeric tensor and turns a
result tensor, or an error, into a reply body the caller's system reads
natively. To add one, subclass :class:`CasCodec`, set ``media_type`` and
implement the three methods; then list it in ``codecs/__init__.py``.

Contract:
- ``decode_tensor`` returns a numeric numpy array (any shape) and raises
  :class:`~mlbridge.errors.PayloadError` with a message that says what is
  wrong and where; it must never allocate more than the body can describe.
- ``encode_tensor`` must round-trip float32 values exactly.
- ``decode_arguments`` reads named tensors (an association, for the gradient
  route's ``x`` and ``cotangent``); a bare tensor is the argument ``x``.
- ``encode_error`` answers with something the caller's system can hold as
  a value, e.g. ``Failure[...]`` for Wolfram Language.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ..errors import MLBridgeError

FAILURE_TAG = "MLBridge"


class CasCodec(ABC):
    """One wire format of the CAS endpoint."""

    media_type: str = ""

    def sniff(self, body: bytes) -> bool:
        """Whether ``body`` looks like this format whatever its Content-Type."""
        return False

    @abstractmethod
    def decode_tensor(self, body: bytes) -> np.ndarray:
        """Parse a request body into a numeric array."""

    def decode_arguments(self, body: bytes) -> dict[str, np.ndarray]:
        """Parse named tensors (an association), or one bare tensor as ``x``."""
        return {"x": self.decode_tensor(body)}

    @abstractmethod
    def encode_tensor(self, array: np.ndarray) -> bytes:
        """Write a result array as a reply body."""

    @abstractmethod
    def encode_error(self, error: MLBridgeError) -> bytes:
        """Write an error as a reply body the caller can hold as a value."""


def failure_fields(error: MLBridgeError) -> dict[str, object]:
    """The fields every CAS error reply carries, in this order."""
    return {
        "MessageTemplate": error.message,
        "Status": error.status,
        "Code": error.code,
    }
