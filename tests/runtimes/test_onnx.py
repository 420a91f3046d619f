"""The ONNX runtime on the tiny test models: signatures, predictions, threads, gradients."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from support import TEST_MODELS

from mlbridge.protocol import ModelSignature, TensorSpec
from mlbridge.runtimes import RUNTIMES, OnnxRuntime

IMAGES = np.random.default_rng(0).random((4, 28, 28), dtype=np.float32)


def loaded(name: str, threads: int = 1) -> OnnxRuntime:
    runtime = OnnxRuntime(TEST_MODELS / name, threads=threads)
    runtime.load()
    return runtime


def weights() -> np.ndarray:
    graph = onnx.load(str(TEST_MODELS / "linear.onnx")).graph
    return next(numpy_helper.to_array(t) for t in graph.initializer if t.name == "W")


def test_onnx_files_select_this_runtime() -> None:
    assert RUNTIMES[".onnx"] is OnnxRuntime and OnnxRuntime.inline_safe


def test_the_signature_is_read_from_the_file_with_symbolic_dims_as_minus_one() -> None:
    assert loaded("linear.onnx").signature() == ModelSignature(
        inputs=(TensorSpec("input", "FP32", (-1, 28, 28)),),
        outputs=(TensorSpec("output", "FP32", (-1, 10)),),
    )
    assert [spec.name for spec in loaded("twoin.onnx").signature().inputs] == ["a", "b"]


def test_predict_computes_the_model() -> None:
    logits = loaded("linear.onnx").predict({"input": IMAGES})["output"]
    assert logits.shape == (4, 10)
    np.testing.assert_allclose(logits, IMAGES.reshape(4, 784) @ weights(), rtol=1e-5, atol=1e-6)
    a, b = np.ones((2, 3), np.float32), np.full((2, 3), 2, np.float32)
    assert loaded("twoin.onnx").predict({"a": a, "b": b})["sum"].tolist() == [[3.0] * 3] * 2


def test_one_session_serves_concurrent_calls() -> None:
    runtime = loaded("linear.onnx", threads=2)
    expected = runtime.predict({"input": IMAGES})["output"]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: runtime.predict({"input": IMAGES}), range(16)))
    assert all(np.array_equal(result["output"], expected) for result in results)


def test_a_broken_file_fails_to_load(tmp_path) -> None:
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    with pytest.raises(Exception, match=r"broken\.onnx|Protobuf|INVALID"):
        OnnxRuntime(tmp_path / "broken.onnx").load()


def test_the_gradient_runtime_is_an_onnx_graph_in_memory() -> None:
    gradient = loaded("linear.onnx").gradient_runtime()
    assert isinstance(gradient, OnnxRuntime) and gradient.graph
    gradient.load()
    names = [spec.name for spec in gradient.signature().inputs]
    assert sorted(names) == ["input", "output_cotangent"]
    dy = np.eye(10, dtype=np.float32)[:4]
    dx = gradient.predict({"input": IMAGES, "output_cotangent": dy})["input_grad"]
    np.testing.assert_allclose(dx.reshape(4, 784), dy @ weights().T, rtol=1e-5, atol=1e-6)
