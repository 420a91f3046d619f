"""The TFLite runtime (LiteRT) on linear-lite.tflite: the same numbers as linear.onnx."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from support import TEST_MODELS

from mlbridge.errors import GradientUnavailable
from mlbridge.protocol import TensorSpec
from mlbridge.runtimes import RUNTIMES, OnnxRuntime, TfliteRuntime

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert (the tflite extra) is not installed")

IMAGES = np.random.default_rng(0).random((4, 28, 28), dtype=np.float32)


@pytest.fixture(scope="module")
def lite() -> TfliteRuntime:
    runtime = TfliteRuntime(TEST_MODELS / "linear-lite.tflite")
    runtime.load()
    return runtime


def test_tflite_files_select_this_runtime() -> None:
    assert RUNTIMES[".tflite"] is TfliteRuntime


def test_the_signature_keeps_the_public_names(lite: TfliteRuntime) -> None:
    signature = lite.signature()
    assert signature.inputs == (TensorSpec("input", "FP32", (-1, 28, 28)),)
    assert signature.outputs == (TensorSpec("output", "FP32", (-1, 10)),)


def test_predictions_equal_the_onnx_twin(lite: TfliteRuntime) -> None:
    onnx = OnnxRuntime(TEST_MODELS / "linear.onnx")
    onnx.load()
    expected = onnx.predict({"input": IMAGES})["output"]
    np.testing.assert_allclose(lite.predict({"input": IMAGES})["output"], expected, atol=1e-5)
    one = lite.predict({"input": IMAGES[:1]})["output"]
    np.testing.assert_allclose(one, expected[:1], atol=1e-5)


def test_concurrent_calls_borrow_their_own_interpreters(lite: TfliteRuntime) -> None:
    expected = lite.predict({"input": IMAGES})["output"]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: lite.predict({"input": IMAGES}), range(16)))
    assert all(np.allclose(result["output"], expected) for result in results)


def test_tflite_models_say_how_to_get_a_gradient(lite: TfliteRuntime) -> None:
    with pytest.raises(GradientUnavailable, match="export --to onnx --grad"):
        lite.gradient_runtime()
