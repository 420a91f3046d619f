"""ONNX models through onnxruntime (thread-safe: one session serves all requests).

An ONNX model's gradient companion is built here at load time, as a second
ONNX graph (:func:`mlbridge.gradients.build_vjp`), so plain onnxruntime serves
gradients too.
"""

from __future__ import annotations

from math import prod
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingDependency
from ..protocol import V2_TO_NUMPY, ModelSignature, TensorSpec
from .base import Runtime, dims

CHUNK_ROWS = 512  # rows per runtime call for big batches, the arena off
# With the arena on, each call gets at most KEPT_CALL_BYTES of inputs and outputs (and at
# most KEPT_ROWS rows): the arena keeps the working memory of such a call for good.
KEPT_CALL_BYTES = 128 << 10
KEPT_ROWS = 64  # the default max_batch_size: a full batch is one call
MIN_KEPT_ROWS = 8  # a model whose rows are too big for this many per call: arena off
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

    def __init__(
        self, path: Path, threads: int = 1, graph: bytes | None = None, keep_memory: bool = True
    ) -> None:
        super().__init__(path, threads)
        self.graph = graph  # a serialized model built in memory, else read from ``path``
        # False: the arena stays off whatever the rows. The gradient graphs kept far more
        # than their rows' size: after 10,000 images in 20-row calls, mnist.vjp 32 MB and
        # mnist-cnn.vjp 45 MB, where the models themselves kept 0.6 and 9 MB.
        self.keep_memory = keep_memory

    def load(self) -> None:
        self.session = self._session(arena=self.keep_memory)
        signature = self.signature()
        self.rows_per_call = kept_rows(signature) if self.keep_memory else 0
        if not self.rows_per_call:
            if self.keep_memory:  # rows too big, or of any size: the arena goes off
                self.session = self._session(arena=False)
            self.rows_per_call = CHUNK_ROWS if signature.batchable() else 0
        self.output_names = [out.name for out in self.session.get_outputs()]

    def _session(self, arena: bool) -> Any:
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
        # The memory arena keeps the peak of the largest call for good (a 10,000-image CNN
        # batch: 2.7 GB), so it is on only where calls are kept small (kept_rows). Off,
        # every call maps its working memory afresh: the CNN's batch of 8 cost 16% more.
        options.enable_cpu_mem_arena = arena
        return onnxruntime.InferenceSession(
            self.graph or str(self.path), options, providers=["CPUExecutionProvider"]
        )

    def signature(self) -> ModelSignature:
        return ModelSignature(
            inputs=tuple(_spec(arg) for arg in self.session.get_inputs()),
            outputs=tuple(_spec(arg) for arg in self.session.get_outputs()),
        )

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        step = self.rows_per_call
        rows = _rows(inputs) if step else 0
        if rows <= step:
            return dict(zip(self.output_names, self.session.run(self.output_names, inputs)))
        # Big batches in chunks: the working memory of one chunk, and faster (measured).
        parts = [
            self.session.run(self.output_names, {k: v[i : i + step] for k, v in inputs.items()})
            for i in range(0, rows, step)
        ]
        return {
            name: np.concatenate(column) for name, column in zip(self.output_names, zip(*parts))
        }

    def gradient_runtime(self) -> Runtime:
        """The VJP of this graph, built in memory (GradientUnavailable names a missing rule)."""
        import onnx

        from ..gradients import build_vjp

        vjp = build_vjp(onnx.load(str(self.path)))
        return OnnxRuntime(self.path, self.threads, vjp.SerializeToString(), keep_memory=False)


def kept_rows(signature: ModelSignature) -> int:
    """Rows per call with the arena on: as many as fit :data:`KEPT_CALL_BYTES` (at most
    :data:`KEPT_ROWS`); 0 (arena off) unless every tensor is a batch of rows of a fixed
    size and :data:`MIN_KEPT_ROWS` of them fit."""
    specs = (*signature.inputs, *signature.outputs)
    if not signature.batchable() or any(size < 0 for spec in specs for size in spec.shape[1:]):
        return 0
    if any(spec.datatype not in V2_TO_NUMPY for spec in specs):  # strings: no fixed size
        return 0
    row_bytes = sum(prod(spec.shape[1:]) * spec.dtype.itemsize for spec in specs)
    rows = min(KEPT_ROWS, KEPT_CALL_BYTES // max(row_bytes, 1))
    return rows if rows >= MIN_KEPT_ROWS else 0


def _rows(inputs: dict[str, np.ndarray]) -> int:
    """The batch size when every input shares a leading axis; 0 (never chunk) otherwise."""
    sizes = {v.shape[0] if v.ndim else -1 for v in inputs.values()}
    return sizes.pop() if len(sizes) == 1 else 0


def _spec(arg: Any) -> TensorSpec:
    """An onnxruntime NodeArg (untyped: onnxruntime ships no stubs) as a TensorSpec."""
    return TensorSpec(arg.name, ONNX_TO_V2.get(arg.type, arg.type), dims(arg.shape))
