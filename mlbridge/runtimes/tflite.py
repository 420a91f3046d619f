"""TFLite models through the LiteRT interpreter (ai-edge-litert).

An interpreter is not reentrant, so each request borrows one from a pool
that grows on demand: never beyond the requests running at once (the
server's workers, plus one on the event loop), and a request never waits.
Models with one SignatureDef (what Keras and the TFLite converter write)
run through their signature runner, which keeps the public tensor names;
others through raw tensors.
"""

from __future__ import annotations

import queue
from collections.abc import Callable

import numpy as np

from ..errors import MissingDependency
from ..protocol import ModelSignature, TensorSpec, v2_datatype
from .base import Runtime

Engine = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def _interpreter_class() -> type:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise MissingDependency("ai-edge-litert", "tflite", "serving .tflite models") from None
    return Interpreter


class TfliteRuntime(Runtime):
    """Runs ``.tflite`` files; one interpreter per concurrent request."""

    suffixes = (".tflite",)
    extra = "tflite"
    inline_safe = True
    no_gradient = (
        "TFLite models carry no gradient; export from the Keras or ONNX source with "
        "'mlbridge export --to onnx --grad' and serve the .onnx file"
    )

    def load(self) -> None:
        self._interpreter_class = _interpreter_class()
        self._idle: queue.SimpleQueue[Engine] = queue.SimpleQueue()
        interpreter = self._interpreter_class(model_path=str(self.path), num_threads=self.threads)
        signatures = interpreter.get_signature_list()
        self._signature_key = next(iter(signatures)) if len(signatures) == 1 else None
        if self._signature_key:
            runner = interpreter.get_signature_runner(self._signature_key)
            inputs, outputs = runner.get_input_details(), runner.get_output_details()
        else:
            interpreter.allocate_tensors()
            inputs = {_raw_name(d): d for d in interpreter.get_input_details()}
            outputs = {_raw_name(d): d for d in interpreter.get_output_details()}
        self._signature = ModelSignature(
            inputs=tuple(_spec(name, detail) for name, detail in inputs.items()),
            outputs=tuple(_spec(name, detail) for name, detail in outputs.items()),
        )
        self._idle.put(self._engine(interpreter))

    def signature(self) -> ModelSignature:
        return self._signature

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        engine = self._borrow()
        try:
            return engine(inputs)
        finally:
            self._idle.put(engine)

    def _borrow(self) -> Engine:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            interpreter = self._interpreter_class(
                model_path=str(self.path), num_threads=self.threads
            )
            return self._engine(interpreter)

    def _engine(self, interpreter) -> Engine:
        if self._signature_key:
            runner = interpreter.get_signature_runner(self._signature_key)
            return lambda inputs: {k: v.copy() for k, v in runner(**inputs).items()}
        interpreter.allocate_tensors()
        return lambda inputs: _run_raw(interpreter, inputs)


def _run_raw(interpreter, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    details = interpreter.get_input_details()
    resize = [d for d in details if tuple(d["shape"]) != inputs[_raw_name(d)].shape]
    for detail in resize:
        interpreter.resize_tensor_input(detail["index"], inputs[_raw_name(detail)].shape)
    if resize:
        interpreter.allocate_tensors()
    for detail in details:
        interpreter.set_tensor(detail["index"], inputs[_raw_name(detail)])
    interpreter.invoke()
    return {
        _raw_name(d): interpreter.get_tensor(d["index"]).copy()
        for d in interpreter.get_output_details()
    }


def _raw_name(detail: dict) -> str:
    """A raw tensor's name without the 'serving_default_' prefix and ':0' suffix."""
    return detail["name"].removeprefix("serving_default_").split(":")[0]


def _spec(name: str, detail: dict) -> TensorSpec:
    signature = detail.get("shape_signature", detail["shape"])
    shape = tuple(int(d) if d >= 0 else -1 for d in signature)
    return TensorSpec(name, v2_datatype(detail["dtype"]), shape)
