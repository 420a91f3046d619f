"""The ONNX runtime on the tiny test models: signatures, predictions, threads, gradients."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from unittest import mock

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from support import TEST_MODELS

from mlbridge.protocol import ModelSignature, TensorSpec
from mlbridge.runtimes import RUNTIMES, OnnxRuntime
from mlbridge.runtimes.onnx import (
    CHUNK_ROWS,
    KEPT_CALL_BYTES,
    KEPT_ROWS,
    MIN_KEPT_ROWS,
    kept_rows,
)

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


# --- the memory arena: on where calls are kept small, their rows bounded -----------------


def spec(name: str, shape: tuple[int, ...], datatype: str = "FP32") -> TensorSpec:
    return TensorSpec(name, datatype, shape)


@pytest.mark.parametrize(
    ("inputs", "outputs", "rows"),
    [
        ([spec("x", (-1, 28, 28))], [spec("y", (-1, 10))], KEPT_CALL_BYTES // (3136 + 40)),
        ([spec("x", (-1, 3))], [spec("y", (-1,))], KEPT_ROWS),  # tiny rows: a full batch
        ([spec("x", (-1, 3), "FP64"), spec("k", (-1, 2), "INT8")], [spec("y", (-1, 1))],
         KEPT_ROWS),
        ([spec("x", (-1, 64, 64))], [spec("y", (-1, 10))], 0),  # 16 KB rows: fewer than 8 fit
        ([spec("x", (-1, -1))], [spec("y", (-1, 10))], 0),  # rows of any size
        ([spec("x", (3, 4))], [spec("y", (3,))], 0),  # no batch axis
        ([spec("x", (-1, 4), "BYTES")], [spec("y", (-1,))], 0),  # strings: no fixed size
    ],
    ids=["mnist", "tiny", "mixed", "big-rows", "dynamic", "unbatched", "strings"],
)  # fmt: skip
def test_the_arena_keeps_calls_of_bounded_size_or_is_off(inputs, outputs, rows) -> None:
    signature = ModelSignature(inputs=tuple(inputs), outputs=tuple(outputs))
    assert kept_rows(signature) == rows
    assert rows == 0 or MIN_KEPT_ROWS <= rows <= KEPT_ROWS


def test_a_batch_beyond_a_call_runs_in_calls_of_kept_rows_with_the_same_result() -> None:
    runtime = loaded("linear.onnx")
    assert runtime.session.get_session_options().enable_cpu_mem_arena
    assert runtime.rows_per_call == kept_rows(runtime.signature()) > 0
    images = np.random.default_rng(1).random((3 * runtime.rows_per_call + 5, 28, 28), np.float32)
    calls = []
    run = runtime.session.run
    with mock.patch.object(runtime.session, "run", lambda *a: calls.append(a) or run(*a)):
        logits = runtime.predict({"input": images})["output"]
    assert [len(call[1]["input"]) for call in calls] == [runtime.rows_per_call] * 3 + [5]
    expected = np.concatenate(
        [runtime.predict({"input": image[None]})["output"] for image in images]
    )
    np.testing.assert_allclose(logits, expected, rtol=1e-6, atol=1e-6)


def test_a_model_of_rows_of_any_size_runs_with_the_arena_off(tmp_path) -> None:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", "n"])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", "n"])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "relu.onnx"))
    runtime = OnnxRuntime(tmp_path / "relu.onnx")
    runtime.load()
    assert not runtime.session.get_session_options().enable_cpu_mem_arena
    assert runtime.rows_per_call == CHUNK_ROWS
    batch = np.random.default_rng(2).standard_normal((CHUNK_ROWS + 3, 5)).astype(np.float32)
    assert np.array_equal(runtime.predict({"x": batch})["y"], np.maximum(batch, 0))


def test_a_gradient_graph_keeps_no_memory() -> None:
    gradient = loaded("linear.onnx").gradient_runtime()
    gradient.load()
    assert not gradient.session.get_session_options().enable_cpu_mem_arena
    assert gradient.rows_per_call == CHUNK_ROWS
