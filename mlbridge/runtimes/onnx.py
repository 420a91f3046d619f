"""ONNX models through onnxruntime (thread-safe: one session serves all requests).

An ONNX model's gradient companion is built here at load time, as a second
ONNX graph (:func:`mlbridge.gradients.build_vjp`), so plain onnxruntime serves
gradients too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingDependency
from ..protocol import ModelSignature, TensorSpec
from .base import Runtime, dims

CHUNK_ROWS = 512  # rows per runtime call for big batches
# onnxruntime names element types "tensor(float)"; map them to V2 names.
ONNX_TO_V2 = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
}


class OnnxRuntime(Runtime):
    """Runs ``.onnx`` files on the CPU execution provider."""

    suffixes = (".onnx",)
    extra = ""
    inline_safe = True

    def __init__(self, path: Path, threads: int = 1, graph: bytes | None = None) -> None:
        super().__init__(path, threads)
        self.graph = graph  # a serialized model built in memory, else read from ``path``

    def load(self) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise MissingDependency("onnxruntime", "", "serving .onnx models") from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # Spinning intra-op threads burned ~1.2 ms of CPU per call between single-image
        # requests here (measured: 111 µs with spinning off).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # The memory arena keeps the peak of the largest batch for good: a 10,000-image CNN
        # request left the server at 2.7 GB instead of 116 MB (docs/performance.md).
        options.enable_cpu_mem_arena = False
        self.session = onnxruntime.InferenceSession(
            self.graph or str(self.path), options, providers=["CPUExecutionProvider"]
        )
        self.output_names = [out.name for out in self.session.get_outputs()]
        self._chunkable = self.signature().batchable()  # every tensor has a batch axis

    def signature(self) -> ModelSignature:
        return ModelSignature(
            inputs=tuple(_spec(arg) for arg in self.session.get_inputs()),
            outputs=tuple(_spec(arg) for arg in self.session.get_outputs()),
        )

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = _rows(inputs) if self._chunkable else 0
        if rows <= CHUNK_ROWS:
            return dict(zip(self.output_names, self.session.run(self.output_names, inputs)))
        # Big batches in chunks: the working memory of one chunk, and faster (measured).
        parts = [
            self.session.run(
                self.output_names, {k: v[i : i + CHUNK_ROWS] for k, v in inputs.items()}
            )
            for i in range(0, rows, CHUNK_ROWS)
        ]
        return {
            name: np.concatenate(column) for name, column in zip(self.output_names, zip(*parts))
        }

    def gradient_runtime(self) -> Runtime:
        """The VJP of this graph, built in memory (GradientUnavailable names a missing rule)."""
        import onnx

        from ..gradients import build_vjp

        vjp = build_vjp(onnx.load(str(self.path)))
        return OnnxRuntime(self.path, self.threads, vjp.SerializeToString())


def _rows(inputs: dict[str, np.ndarray]) -> int:
    """The batch size when every input shares a leading axis; 0 (never chunk) otherwise."""
    sizes = {v.shape[0] if v.ndim else -1 for v in inputs.values()}
    return sizes.pop() if len(sizes) == 1 else 0


def _spec(arg: Any) -> TensorSpec:
    """An onnxruntime NodeArg (untyped: onnxruntime ships no stubs) as a TensorSpec."""
    return TensorSpec(arg.name, ONNX_TO_V2.get(arg.type, arg.type), dims(arg.shape))
