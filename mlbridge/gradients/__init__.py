"""Reverse-mode gradients of ONNX models, as ONNX models that plain onnxruntime serves.

``build_vjp(model)`` returns the vector-Jacobian product model (:mod:`.vjp`), built from the
per-op rules in :mod:`.rules`; ``to_float64`` and ``fd_relative_error`` check it against
float64 finite differences. Needs only ``onnx`` and ``numpy``.
"""

from __future__ import annotations

from ..protocol import COTANGENT_SUFFIX, GRAD_SUFFIX
from .check import fd_relative_error
from .precision import to_float64
from .rules import GRADIENT_RULES
from .vjp import build_vjp

__all__ = [
    "COTANGENT_SUFFIX",
    "GRADIENT_RULES",
    "GRAD_SUFFIX",
    "build_vjp",
    "fd_relative_error",
    "to_float64",
]
