"""Check served gradients against float64 central differences of the forward model.

Directional: for a unit direction v over all differentiated inputs, the VJP's ``dx·v``
must equal ``(f(x+hv) - f(x-hv))·dy / 2h``, computed in float64 by ONNX's reference
evaluator. The first direction is the gradient itself (so its length is checked), the
others are random. The error is measured relative to ``‖dx‖``, the natural scale of
a directional derivative.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from .precision import to_float64

#: Central-difference step along a unit direction, in float64. Small, because ReLU and
#: MaxPool make models piecewise linear: on MNIST CNNs a step of 1e-6 already crosses
#: kinks (errors ~3e-6), 1e-7 does not (~4e-9), and 1e-8 loses digits to rounding.
STEP = 1e-7


def fd_relative_error(
    forward: onnx.ModelProto,
    inputs: dict[str, np.ndarray],
    cotangents: dict[str, np.ndarray],
    grads: dict[str, np.ndarray],
    directions: int = 3,
    seed: int = 0,
) -> float:
    """The largest |dx·v - FD₆₄| / ‖dx‖ over ``directions`` unit directions v."""
    evaluator = float64_evaluator(forward)
    names = [value.name for value in forward.graph.output if value.name in cotangents]
    point = {name: _widened(array) for name, array in inputs.items()}
    scale = max(
        float(np.sqrt(sum(np.sum(np.square(g, dtype=np.float64)) for g in grads.values()))), 1e-300
    )
    rng = np.random.default_rng(seed)
    errors = []
    for index in range(directions):
        v = grads if index == 0 else {k: rng.standard_normal(g.shape) for k, g in grads.items()}
        v = _unit(v)
        exact = sum(float(np.sum(grads[k].astype(np.float64) * v[k])) for k in grads)
        ahead = evaluator.run(names, _moved(point, v, STEP))
        behind = evaluator.run(names, _moved(point, v, -STEP))
        differences = (
            np.sum((a - b) * cotangents[n].astype(np.float64))
            for n, a, b in zip(names, ahead, behind)
        )
        errors.append(abs(exact - float(sum(differences)) / (2 * STEP)) / scale)
    return max(errors)


class Erf(OpRun):
    """Erf to float64 precision (the reference evaluator's is off by up to 2e-8)."""

    # The evaluator replaces an op by the class of the same name, hence the bare name.

    op_domain = ""

    def _run(self, x: np.ndarray) -> tuple[np.ndarray]:
        return (np.vectorize(math.erf, otypes=[x.dtype])(x),)


def float64_evaluator(model: onnx.ModelProto) -> ReferenceEvaluator:
    """ONNX's reference evaluator for the float64 copy of ``model``, with an exact Erf."""
    return ReferenceEvaluator(to_float64(model), new_ops=[Erf])


def _widened(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float64) if array.dtype == np.float32 else array


def _unit(direction: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    norm = np.sqrt(sum(np.sum(np.square(d, dtype=np.float64)) for d in direction.values()))
    return {k: d.astype(np.float64) / max(float(norm), 1e-300) for k, d in direction.items()}


def _moved(point: dict, direction: dict, step: float) -> dict:
    return {k: a + step * direction[k] if k in direction else a for k, a in point.items()}
