"""The EvidenceTweakingLayer, f(x) = A * g(B * x) with g = asinh or atan, and its squashes.

Importing this module registers the layer with Keras (package ``mlbridge``), so that
``keras.models.load_model`` finds it in a fresh process without ``custom_objects``:
Keras 3 imports only ``keras*`` modules while loading, so do
``import mlbridge.training.layers`` (or this module) first; the Keras runtime does.
It lives beside the Keras runtime so that serving never imports the training package.

The squashes are written with ``keras.ops`` from operations that every export target has
as a built-in: ``asinh`` is not a TFLite built-in, and ``atan`` is only one as ``atan2``.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from ..errors import ConfigError

# Where the closed form log(t + sqrt(t² + 1)) loses digits: below, 1 + t rounds away t
# (the Taylor series to t⁹ is exact to 3e-15 there); above, t² nears float32's range.
ASINH_SERIES_BELOW = 0.05
ASINH_LOG2X_ABOVE = 1e8
LOG_2 = 0.6931471805599453


def asinh(x: Any) -> Any:
    """Inverse hyperbolic sine from sign, log and sqrt, accurate near 0 and for huge |x|."""
    # sign(x) * g(|x|) has gradient 0 at x = 0 (sign' = 0); a constant ±1 factor keeps it 1.
    sign = ops.where(x < 0, -ops.ones_like(x), ops.ones_like(x))
    t = sign * x
    # Each branch sees its input clamped to its range, so the branches not chosen stay finite
    # and their zero-weighted gradients cannot turn into NaN.
    small = ops.minimum(t, ASINH_SERIES_BELOW)
    u = ops.square(small)
    series = small * (1.0 + u * (-1 / 6 + u * (3 / 40 + u * (-5 / 112 + u * (35 / 1152)))))
    middle = ops.minimum(t, ASINH_LOG2X_ABOVE)
    closed = ops.log(middle + ops.sqrt(ops.square(middle) + 1.0))
    asymptote = ops.log(ops.maximum(t, 1.0)) + LOG_2  # asinh(t) - log(2t) < 1/(4t²)
    return sign * ops.where(
        t < ASINH_SERIES_BELOW, series, ops.where(t > ASINH_LOG2X_ABOVE, asymptote, closed)
    )


def atan(x: Any) -> Any:
    """Inverse tangent, as atan2(x, 1) (a built-in of TFLite and of ONNX converters)."""
    return ops.arctan2(x, ops.ones_like(x))


SQUASHES = {"asinh": asinh, "atan": atan}


def squash(name: str) -> Any:
    """The squash function called ``name``; ConfigError names the known ones."""
    if name not in SQUASHES:
        known = ", ".join(sorted(SQUASHES))
        raise ConfigError(f"unknown nonlinearity {name!r}; expected one of: {known}")
    return SQUASHES[name]


@keras.saving.register_keras_serializable(package="mlbridge")
class EvidenceTweakingLayer(keras.layers.Layer):
    """Scale and squash evidence: A * g(B * x), with learnable A and B (one weight (2,))."""

    def __init__(self, nonlinearity: str = "asinh", **kwargs: Any) -> None:
        self._squash = squash(nonlinearity)
        super().__init__(**kwargs)
        self.nonlinearity = nonlinearity

    def build(self, input_shape: Any) -> None:
        """Create the weight [A, B], initialised from a standard normal."""
        self.ab = self.add_weight(
            name="ab", shape=(2,), initializer=keras.initializers.RandomNormal(), trainable=True
        )
        super().build(input_shape)

    def call(self, inputs: Any) -> Any:
        """Apply A * g(B * inputs) elementwise."""
        return self.ab[0] * self._squash(self.ab[1] * inputs)

    def compute_output_shape(self, input_shape: Any) -> Any:
        """Elementwise: the output has the input's shape."""
        return input_shape

    def get_config(self) -> dict[str, Any]:
        """The base Layer's config plus the nonlinearity."""
        return {**super().get_config(), "nonlinearity": self.nonlinearity}
