"""The reference Keras architectures, selectable by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras

from ..errors import ConfigError
from .layers import EvidenceTweakingLayer

MNIST_LABELS = tuple(str(digit) for digit in range(10))
CIFAR10_LABELS = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


@dataclass(frozen=True)
class Architecture:
    """A named model: what it reads, what it answers, and how to build it."""

    name: str
    dataset: str
    input_shape: tuple[int, ...]
    labels: tuple[str, ...]
    description: str
    build: Callable[[tuple[int, ...]], tuple[Any, Any]]


def _mlp(input_shape: tuple[int, ...]) -> tuple[Any, Any]:
    inputs = keras.Input(input_shape, name="input")
    x = keras.layers.Flatten()(inputs)
    for _ in range(4):
        x = keras.layers.Dense(50, activation="tanh")(x)
    return inputs, keras.layers.Dense(10)(x)


def _cnn(input_shape: tuple[int, ...]) -> tuple[Any, Any]:
    inputs = keras.Input(input_shape, name="input")
    x = inputs
    if len(input_shape) == 2:
        # Served models take [N, H, W] greyscale images; the channel axis is added inside.
        x = keras.layers.Reshape((*input_shape, 1))(x)
    for filters in (32, 64):
        x = keras.layers.Conv2D(filters, 3, activation="relu")(x)
        x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.Dense(50, activation="relu")(x)
    return inputs, keras.layers.Dense(10)(x)


ARCHITECTURES = {
    arch.name: arch
    for arch in (
        Architecture(
            "mnist-mlp",
            "mnist",
            (28, 28),
            MNIST_LABELS,
            "MNIST digits: Flatten, Dense(50, tanh) x4, Dense(10); 10 logits",
            _mlp,
        ),
        Architecture(
            "mnist-cnn",
            "mnist",
            (28, 28),
            MNIST_LABELS,
            "MNIST digits: Conv2D(32)-MaxPool-Conv2D(64)-MaxPool-Dropout-Dense(50)-Dense(10);"
            " 10 logits",
            _cnn,
        ),
        Architecture(
            "cifar10-cnn",
            "cifar10",
            (32, 32, 3),
            CIFAR10_LABELS,
            "CIFAR-10 images: Conv2D(32)-MaxPool-Conv2D(64)-MaxPool-Dropout-Dense(50)-Dense(10);"
            " 10 logits",
            _cnn,
        ),
    )
}


def architecture(name: str) -> Architecture:
    """The architecture called ``name``; ConfigError names the known ones."""
    if name not in ARCHITECTURES:
        known = ", ".join(ARCHITECTURES)
        raise ConfigError(f"unknown architecture {name!r}; expected one of: {known}")
    return ARCHITECTURES[name]


def build_model(name: str, evidence: str | None = None) -> Any:
    """Build the uncompiled Keras model ``name``, optionally ending in an evidence layer."""
    arch = architecture(name)
    inputs, outputs = arch.build(arch.input_shape)
    if evidence:
        outputs = EvidenceTweakingLayer(evidence, name="evidence")(outputs)
    model_name = name if not evidence else f"{name}-{evidence}"
    return keras.Model(inputs, outputs, name=model_name)
