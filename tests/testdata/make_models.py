"""Regenerate the tiny test models (needs the training extra):

    .venv/bin/python tests/testdata/make_models.py

``linear.onnx`` and ``linear-lite.tflite`` compute the same fixed linear map of a
[N,28,28] image to 10 outputs; ``twoin.onnx`` adds two [N,3] inputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent / "models"


def weights() -> np.ndarray:
    return (np.random.default_rng(0).normal(size=(784, 10)) * 0.01).astype(np.float32)


def make_onnx() -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["input", "shape"], ["flat"]),
            helper.make_node("MatMul", ["flat", "W"], ["output"]),
        ],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 28, 28])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        [
            numpy_helper.from_array(np.array([-1, 784], np.int64), "shape"),
            numpy_helper.from_array(weights(), "W"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, HERE / "linear.onnx")
    twoin = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"])],
        "twoin",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 3]),
        ],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", 3])],
    )
    model = helper.make_model(twoin, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, HERE / "twoin.onnx")


def make_tflite() -> None:
    import tensorflow as tf

    matrix = tf.constant(weights())

    @tf.function(input_signature=[tf.TensorSpec([None, 28, 28], tf.float32, name="input")])
    def linear(input):
        return {"output": tf.matmul(tf.reshape(input, [-1, 784]), matrix)}

    module = tf.Module()
    module.linear = linear
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [linear.get_concrete_function()], module
    )
    (HERE / "linear-lite.tflite").write_bytes(converter.convert())


if __name__ == "__main__":
    HERE.mkdir(exist_ok=True)
    make_onnx()
    make_tflite()
