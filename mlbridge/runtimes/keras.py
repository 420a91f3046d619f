"""Keras models (``.keras``/``.h5``) through Keras 3; needs the training extra."""

from __future__ import annotations

import threading

import numpy as np

from ..errors import MissingDependency
from ..protocol import ModelSignature, TensorSpec, v2_datatype
from .base import Runtime, dims


class KerasRuntime(Runtime):
    """Runs Keras model files in-process (imports TensorFlow: start-up is slow)."""

    suffixes = (".keras", ".h5")
    extra = "training"
    no_gradient = (
        "Keras files are served without gradients (serving stays free of TensorFlow "
        "autodiff); export with 'mlbridge export --to onnx --grad' and serve the .onnx file"
    )

    def load(self) -> None:
        try:
            import keras
        except ImportError:
            raise MissingDependency("keras", "training", "serving .keras/.h5 models") from None
        from . import keras_layers  # noqa: F401  registers the custom layers

        self.model = keras.models.load_model(self.path, compile=False)
        self._lock = threading.Lock()
        self._signature = self._read_signature()

    def signature(self) -> ModelSignature:
        return self._signature

    def _read_signature(self) -> ModelSignature:
        inputs = self.model.inputs
        outputs = self.model.outputs
        return ModelSignature(
            inputs=tuple(
                _spec(t, f"input_{i}" if len(inputs) > 1 else "input") for i, t in enumerate(inputs)
            ),
            outputs=tuple(
                _spec(t, f"output_{i}" if len(outputs) > 1 else "output")
                for i, t in enumerate(outputs)
            ),
        )

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = [inputs[spec.name] for spec in self.signature().inputs]
        with self._lock:
            results = self.model(arrays[0] if len(arrays) == 1 else arrays, training=False)
        results = results if isinstance(results, (list, tuple)) else [results]
        names = [spec.name for spec in self.signature().outputs]
        return {name: np.asarray(result) for name, result in zip(names, results)}


def _spec(tensor: object, name: str) -> TensorSpec:
    dtype = np.dtype(str(getattr(tensor, "dtype", "float32")))
    return TensorSpec(name, v2_datatype(dtype), dims(getattr(tensor, "shape", ())))
