"""The inference data model shared by every codec and runtime.

Tensors are numpy arrays; datatypes use the KServe V2 names (``FP32``,
``INT64``, ...). Nothing here knows about HTTP or any wire format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from math import prod
from typing import Any

import numpy as np

from .errors import BadRequest

V2_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
NUMPY_TO_V2: dict[np.dtype, str] = {dtype: name for name, dtype in V2_TO_NUMPY.items()}


def numpy_dtype(datatype: str) -> np.dtype:
    """Return the numpy dtype of a V2 datatype name, or raise BadRequest."""
    try:
        return V2_TO_NUMPY[datatype]
    except (KeyError, TypeError):
        known = ", ".join(V2_TO_NUMPY)
        raise BadRequest(f"unknown datatype {datatype!r}; expected one of {known}") from None


# The byte screens of all_finite and casts_finite. For each float layout (byte order and
# type): where each value's top byte lies (complex arrays: each float component's), the
# value's size, and the top bytes that clear it. No NaN or infinity has a top byte with the
# 7 bits under the sign all ones (float32, float64; float16: its 5 exponent bits); no
# float64 below 2**113 in magnitude has them at 0x47 or more.
_NOT_ALL_ONES = bytes(b for b in range(256) if b & 0x7F != 0x7F)
_NOT_HALF_ALL_ONES = bytes(b for b in range(256) if b & 0x7C != 0x7C)
_BELOW_2_113 = bytes(b for b in range(256) if b & 0x7F < 0x47)
_FINITE: dict[str, tuple[int, int, bytes]] = {}
_FLOAT32_SAFE: dict[str, tuple[int, int, bytes]] = {}
for _order, _top in (("<", -1), (">", 0)):
    for _code, _size, _clear in (
        ("f2", 2, _NOT_HALF_ALL_ONES),
        ("f4", 4, _NOT_ALL_ONES),
        ("f8", 8, _NOT_ALL_ONES),
        ("c8", 4, _NOT_ALL_ONES),
        ("c16", 8, _NOT_ALL_ONES),
    ):
        _FINITE[_order + _code] = (_top % _size, _size, _clear)
    _FLOAT32_SAFE[_order + "f8"] = (_top % 8, 8, _BELOW_2_113)
SCREEN_MAX_BYTES = 1 << 16  # larger arrays go to numpy at once (a screen copies them)


def all_finite(array: np.ndarray) -> bool:
    """Whether no value of ``array`` is NaN or infinite.

    A small float array is screened by its bytes first: if no value's top byte could belong
    to a NaN or an infinity, all are finite; otherwise numpy decides. The screen is two
    bytes operations, where numpy's ``isfinite`` and ``all`` run its ufunc machinery, whose
    code evicts much of a one-image request's from the cache: the screen took 4-10% off such
    a request's CPU (docs/performance.md).
    """
    return _cleared(array, _FINITE) or bool(np.isfinite(array).all())


def casts_finite(array: np.ndarray, dtype: np.dtype) -> bool:
    """Whether casting ``array`` to ``dtype`` surely overflows none: float64 of finite values
    below 2**113 in magnitude, cast to float32 (False: not known; a small array only)."""
    return dtype == np.float32 and _cleared(array, _FLOAT32_SAFE)


def _cleared(array: np.ndarray, screens: dict[str, tuple[int, int, bytes]]) -> bool:
    """Whether every value's top byte is one its layout's screen clears."""
    screen = screens.get(array.dtype.str)
    if screen is None or array.nbytes > SCREEN_MAX_BYTES:
        return False
    top, size, clear = screen
    return not array.tobytes()[top::size].translate(None, clear)


def v2_datatype(dtype: np.dtype) -> str:
    """Return the V2 datatype name of a numpy dtype."""
    try:
        return NUMPY_TO_V2[np.dtype(dtype)]
    except KeyError:
        raise BadRequest(f"numpy dtype {np.dtype(dtype)} has no V2 datatype") from None


# The gradient companion's tensor names (see mlbridge.registry): one owner of the convention.
COTANGENT_SUFFIX = "_cotangent"  # the input carrying dy for output OUTPUT
GRAD_SUFFIX = "_grad"  # the output carrying dx for input INPUT


def cotangent_name(output: str) -> str:
    """The gradient companion's input that carries the cotangent of ``output``."""
    return output + COTANGENT_SUFFIX


def gradient_name(input_name: str) -> str:
    """The gradient companion's output that carries the gradient for ``input_name``."""
    return input_name + GRAD_SUFFIX


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output: V2 datatype and shape (-1 = any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def describe(self) -> str:
        """Say the spec in words, e.g. ``'input' of shape [-1, 28, 28] (FP32)``."""
        return f"{self.name!r} of shape {list(self.shape)} ({self.datatype})"

    @cached_property
    def dtype(self) -> np.dtype:
        """The numpy dtype of the datatype (BadRequest if it has none)."""
        return numpy_dtype(self.datatype)

    def accepts_shape(self, shape: tuple[int, ...]) -> bool:
        """Whether a concrete shape fits this spec."""
        return len(shape) == len(self.shape) and all(
            want < 0 or want == got for want, got in zip(self.shape, shape)
        )

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def max_values(self, cap: int) -> int:
        """The most numbers a tensor of this spec holds within ``cap``: its size when every
        axis is fixed, else as many whole rows of its fixed axes as ``cap`` allows."""
        fixed = prod(size for size in self.shape if size >= 0)
        if all(size >= 0 for size in self.shape):
            return min(fixed, cap)
        return cap // fixed * fixed if fixed else cap


@dataclass(frozen=True)
class ModelSignature:
    """What a model takes and gives, plus optional class labels."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    labels: tuple[str, ...] | None = None

    @cached_property
    def inputs_by_name(self) -> dict[str, TensorSpec]:
        """The input specs by name, in order."""
        return {spec.name: spec for spec in self.inputs}

    def batchable(self) -> bool:
        """Whether every input and output has a leading batch axis of any size."""
        return all(spec.shape[:1] == (-1,) for spec in (*self.inputs, *self.outputs))

    def max_values(self, cap: int, cotangents: bool = False) -> int:
        """The most numbers any one argument may decode to (inputs; with ``cotangents``, the
        outputs too, which the gradient route takes as cotangents), within ``cap``."""
        specs = (*self.inputs, *self.outputs) if cotangents else self.inputs
        return max((spec.max_values(cap) for spec in specs), default=cap)

    def input(self, name: str) -> TensorSpec:
        """Return the input spec called ``name``."""
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)


@dataclass
class InferenceRequest:
    """A request to run one model on named input tensors."""

    inputs: dict[str, np.ndarray]
    id: str | None = None
    outputs: list[str] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    binary_outputs: set[str] = field(default_factory=set)  # "*" = all (V2 binary extension)


@dataclass
class InferenceResponse:
    """The named output tensors of one model run."""

    model_name: str
    outputs: dict[str, np.ndarray]
    id: str | None = None
    model_version: str | None = None
