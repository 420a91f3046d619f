"""Helpers for the VJP tests: tiny graphs in either precision, full central differences.

A plain module, not a conftest.py (tests import it as ``from vjp_helpers import ...``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.capi.onnxruntime_pybind11_state import NotImplemented as KernelMissing

from mlbridge.gradients import COTANGENT_SUFFIX, GRAD_SUFFIX, build_vjp
from mlbridge.gradients.check import float64_evaluator

#: Run-time sizes of the symbolic dims the cases declare ("K" is broadcast at run time).
SIZES = {"N": 2, "M": 3, "K": 1}
FD_STEP = 1e-6


@dataclass
class Case:
    """A one-to-few-node graph: its nodes, inputs (name -> shape or (shape, type)), constants."""

    id: str
    nodes: list[onnx.NodeProto] | Callable[[int], list[onnx.NodeProto]]
    inputs: dict[str, Any]
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    outputs: tuple[str, ...] = ("y",)
    low: float = -2.0
    high: float = 2.0
    opset: int = 17
    #: False where no runtime runs the float64 VJP: then the float32 one is checked against FD.
    float64_runtime: bool = True
    #: Inputs with chosen values instead of random ones.
    fixed: dict[str, np.ndarray] = field(default_factory=dict)

    def model(self, dtype: type = np.float64) -> onnx.ModelProto:
        """The case as a model computing in ``dtype``."""
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        nodes = self.nodes(elem) if callable(self.nodes) else self.nodes
        inputs = [
            helper.make_tensor_value_info(name, *self._declared(spec, elem))
            for name, spec in self.inputs.items()
        ]
        outputs = [helper.make_tensor_value_info(name, elem, None) for name in self.outputs]
        constants = [
            numpy_helper.from_array(v.astype(dtype) if v.dtype.kind == "f" else v, name)
            for name, v in self.constants.items()
        ]
        graph = helper.make_graph(nodes, self.id, inputs, outputs, constants)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])

    def feeds(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Seeded inputs at the run-time sizes, floats uniform in [low, high]."""
        rng = np.random.default_rng(seed)
        feeds = {}
        for name, spec in self.inputs.items():
            elem, shape = self._declared(spec, TensorProto.DOUBLE)
            concrete = [SIZES.get(d, d) for d in shape]
            if name in self.fixed:
                feeds[name] = self.fixed[name]
            elif elem == TensorProto.BOOL:
                feeds[name] = rng.random(concrete) < 0.5
            else:
                feeds[name] = rng.uniform(self.low, self.high, concrete)
        return feeds

    @staticmethod
    def _declared(spec: Any, elem: int) -> tuple[int, list]:
        return (spec[1], spec[0]) if isinstance(spec, tuple) else (elem, spec)


def run_exact(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """All outputs in float64: onnxruntime where it has the kernels, else the reference evaluator.

    Not the reference evaluator first: its MaxPool Indices are wrong with pads.
    """
    try:
        return run_onnxruntime(model, feeds)
    except KernelMissing:
        return float64_evaluator(model).run(None, feeds)


def run_onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """All outputs of ``model`` from onnxruntime's CPU provider, as the server runs it."""
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(None, feeds)


def cotangents_for(model: onnx.ModelProto, feeds: dict, seed: int = 1) -> dict[str, np.ndarray]:
    """Seeded standard-normal cotangents shaped like the model's float outputs at ``feeds``."""
    rng = np.random.default_rng(seed)
    names = [value.name for value in model.graph.output]
    wide = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in feeds.items()}
    outputs = float64_evaluator(model).run(None, wide)
    return {n: rng.standard_normal(np.shape(y)) for n, y in zip(names, outputs)}


def vjp_feeds(feeds: dict, cotangents: dict, dtype: type) -> dict[str, np.ndarray]:
    """The VJP model's inputs: forward inputs and ``O_cotangent``s, floats cast to ``dtype``."""
    cast = {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in feeds.items()}
    cast.update({k + COTANGENT_SUFFIX: v.astype(dtype) for k, v in cotangents.items()})
    return cast


def gradients(vjp: onnx.ModelProto, results: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The VJP's outputs keyed by the input they are the gradient of."""
    return {v.name.removesuffix(GRAD_SUFFIX): r for v, r in zip(vjp.graph.output, results)}


def central_differences(
    model: onnx.ModelProto, feeds: dict, cotangents: dict
) -> dict[str, np.ndarray]:
    """Jᵀ·dy element by element: (f(x + h eᵢ) - f(x - h eᵢ))·dy / 2h, in float64."""
    evaluator = float64_evaluator(model)
    names = list(cotangents)

    def weighted(point: dict) -> float:
        outputs = evaluator.run(names, point)
        return sum(float(np.sum(y * cotangents[n])) for n, y in zip(names, outputs))

    grads = {}
    for name, value in feeds.items():
        if value.dtype != np.float64:
            continue
        grad = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            ahead, behind = value.copy(), value.copy()
            ahead[index] += FD_STEP
            behind[index] -= FD_STEP
            grad[index] = (weighted({**feeds, name: ahead}) - weighted({**feeds, name: behind})) / (
                2 * FD_STEP
            )
        grads[name] = grad
    return grads


def relative_error(actual: dict, expected: dict) -> float:
    """‖actual - expected‖ / ‖expected‖ over all gradients together."""
    assert set(actual) == set(expected), (sorted(actual), sorted(expected))
    difference = sum(np.sum(np.square(actual[k] - expected[k])) for k in expected)
    size = sum(np.sum(np.square(expected[k])) for k in expected)
    return float(np.sqrt(difference) / max(np.sqrt(size), 1e-12))


def vjp_in_both_precisions(case: Case) -> tuple[dict, dict, dict]:
    """(float64 VJP, float32 VJP in onnxruntime, float64 central differences) of a case."""
    model64 = case.model(np.float64)
    feeds = case.feeds()
    cotangents = cotangents_for(model64, feeds)
    vjp32 = build_vjp(case.model(np.float32))
    onnx.checker.check_model(vjp32, full_check=True)
    served = gradients(vjp32, run_onnxruntime(vjp32, vjp_feeds(feeds, cotangents, np.float32)))
    numeric = central_differences(model64, feeds, cotangents)
    if not case.float64_runtime:
        return numeric, served, numeric
    vjp64 = build_vjp(model64)
    onnx.checker.check_model(vjp64, full_check=True)
    exact = gradients(vjp64, run_exact(vjp64, vjp_feeds(feeds, cotangents, np.float64)))
    return exact, served, numeric
