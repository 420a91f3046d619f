"""A TFLite file of the demo MLP with the very weights of ``mnist.onnx`` (for LiteRT runs).

    python -m bench.litert_model OUT.tflite

The demo models ship as ONNX only. This rebuilds the MLP (Flatten, 4 x Dense(50, tanh),
Dense(10)) in Keras from the ONNX graph's MatMul/Add initializers, converts it with
``tf.lite.TFLiteConverter`` and checks it against onnxruntime on held-out images (fails
above 1e-4). It needs TensorFlow (the training extra); the bench runs it once and caches
the file, and without TensorFlow it goes on with onnxruntime in place of LiteRT, saying so.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from mlbridge.registry import DEMO_MODELS

TOLERANCE = 1e-4


def dense_weights(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(kernel, bias) of each Dense layer, in graph order: MatMul then Add."""
    graph = onnx.load(str(path)).graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    kernels = [constants[node.input[1]] for node in graph.node if node.op_type == "MatMul"]
    biases = [constants[node.input[1]] for node in graph.node if node.op_type == "Add"]
    return list(zip(kernels, biases))


def build(out: Path) -> None:
    import tensorflow as tf
    from tensorflow import keras

    layers = dense_weights(DEMO_MODELS / "mnist.onnx")
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten()])
    for index, (kernel, bias) in enumerate(layers):
        activation = "tanh" if index < len(layers) - 1 else None
        model.add(keras.layers.Dense(kernel.shape[1], activation=activation))
        model.layers[-1].set_weights([kernel, bias])
    out.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    check(out)


def check(path: Path) -> None:
    """Raise unless the TFLite file agrees with the ONNX model on random images."""
    import onnxruntime
    from ai_edge_litert.interpreter import Interpreter

    images = np.random.default_rng(0).random((16, 28, 28), dtype=np.float32)
    session = onnxruntime.InferenceSession(str(DEMO_MODELS / "mnist.onnx"))
    expected = session.run(None, {"input": images})[0]
    interpreter = Interpreter(model_path=str(path))
    entry = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(entry, list(images.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(entry, images)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    difference = float(np.abs(got - expected).max())
    if difference > TOLERANCE:
        raise SystemExit(f"TFLite and ONNX differ by {difference} (> {TOLERANCE})")
    print(f"{path}: agrees with mnist.onnx within {difference:.1e}")


if __name__ == "__main__":
    build(Path(sys.argv[1]))
