"""The codec interface of the CAS endpoint (``POST /{model}``).

A CAS codec turns a request body into one numeric tensor and turns a
result tensor, or an error, into a reply body the caller's system reads
natively. To add one, subclass :class:`CasCodec`, set ``media_type`` and
implement the three methods; then list it in ``codecs/__init__.py``.

Contract:
- ``decode_tensor`` returns a numeric numpy array (any shape) and raises
  :class:`~mlbridge.errors.PayloadError` with a message that says what is
  wrong and where, never another exception; it must never allocate more
  than the body can describe, and refuses, before allocating, a tensor of
  more than ``max_values`` numbers (see :func:`max_values_for`). NaN and
  infinities the format can carry come through (the inference layer
  refuses them unless the model opts in); a number too large for its type is
  a PayloadError.
- ``decode_cost`` says about how many numbers decoding a body costs, so
  that a costly body (a big one, or a compressed one) is decoded off the
  event loop.
- ``encode_tensor`` must round-trip float32 values exactly.
- ``decode_arguments`` reads named tensors (an association, for the gradient
  route's ``x`` and ``cotangent``); a bare tensor is the argument ``x``.
- ``encode_error`` answers with something the caller's system can hold as
  a value, e.g. ``Failure[...]`` for Wolfram Language.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod

import numpy as np

from ..errors import MLBridgeError, PayloadError

FAILURE_TAG = "MLBridge"
DEFAULT_MAX_BODY_BYTES = 512 * 1024 * 1024  # the max_body_mb setting's default
BYTES_PER_VALUE = 4  # a float32: the decoded-size cap is the body limit's worth of them
BODY_BYTES_PER_VALUE = 16  # about what a number takes as text or JSON, with its separator


def max_values_for(max_body_bytes: int) -> int:
    """The most numbers a request may decode to: the float32 values the body limit holds.

    That is the largest tensor a model can be sent at all, as raw bytes in a V2
    binary request; no format may decode to more, however it is compressed or
    nested. 134,217,728 for the default 512 MiB.
    """
    return max(1, max_body_bytes // BYTES_PER_VALUE)


DEFAULT_MAX_VALUES = max_values_for(DEFAULT_MAX_BODY_BYTES)


def check_values(count: int, max_values: int, what: str) -> None:
    """Refuse, before allocating, a tensor of more than ``max_values`` numbers."""
    if count > max_values:
        raise PayloadError(
            f"{what} holds {count} numbers; at most {max_values} are accepted here "
            "(what the model's input can hold, within the body limit's worth of float32 values)"
        )


class CasCodec(ABC):
    """One wire format of the CAS endpoint."""

    media_type: str = ""
    max_values: int = DEFAULT_MAX_VALUES

    def bounded(self, max_values: int) -> CasCodec:
        """This codec, refusing tensors of more than ``max_values`` numbers (a model's bound)."""
        if max_values >= self.max_values:
            return self
        tighter = copy.copy(self)
        tighter.max_values = max(1, max_values)
        return tighter

    def sniff(self, body: bytes) -> bool:
        """Whether ``body`` looks like this format whatever its Content-Type."""
        return False

    def decode_cost(self, body: bytes) -> int:
        """About how many numbers decoding ``body`` yields: its cost, to choose where to run."""
        return len(body) // BODY_BYTES_PER_VALUE

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
