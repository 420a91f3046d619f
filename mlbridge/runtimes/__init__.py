"""Runtimes, keyed by model file suffix.

Each runtime imports its engine lazily in ``load``, so serving ONNX or
TFLite files never imports TensorFlow.
"""

from __future__ import annotations

from .base import Runtime
from .keras import KerasRuntime
from .onnx import OnnxRuntime
from .tflite import TfliteRuntime

RUNTIMES: dict[str, type[Runtime]] = {
    suffix: runtime
    for runtime in (OnnxRuntime, TfliteRuntime, KerasRuntime)
    for suffix in runtime.suffixes
}

__all__ = ["RUNTIMES", "Runtime"]
