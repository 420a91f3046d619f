"""The gradient of an ONNX export: ``NAME.vjp.onnx``, checked against Keras' own autodiff.

The vector-Jacobian product is built by :func:`mlbridge.gradients.build_vjp` from the
exported ONNX file and checked in onnxruntime against ``tf.GradientTape`` of the Keras model
and against float64 central differences of the ONNX model; a failed check removes the file
and raises :class:`~mlbridge.errors.ExportCheckFailed`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from ..errors import ExportCheckFailed
from ..protocol import cotangent_name, gradient_name

INPUT_NAME, OUTPUT_NAME = "input", "output"
VJP_SUFFIX = ".vjp.onnx"
GRAD_TOLERANCE = 1e-5  # largest |VJP - tf.GradientTape|
FD_TOLERANCE = 1e-3  # largest relative error against float64 central differences
FD_SAMPLES = 8  # samples in the finite-difference check (ONNX's reference evaluator is slow)
#: Added to the finite-difference samples: blank image regions make MaxPool windows tie,
#: where the model has no derivative and central differences average the tied entries.
TIE_BREAKING_NOISE = 1e-3


def gradient_entry(
    model: Any, out: Path, name: str, formats: tuple[str, ...], grad: bool, inputs: np.ndarray
) -> dict[str, Any] | None:
    """The sidecar's "gradient": a new checked VJP, the previous one, or none."""
    vjp_path = out / f"{name}{VJP_SUFFIX}"
    if grad:
        return export_vjp(model, out / f"{name}.onnx", vjp_path, inputs)
    if "onnx" in formats:
        # A VJP of the replaced ONNX file would no longer match it.
        vjp_path.unlink(missing_ok=True)
        return None
    sidecar = out / f"{name}.json"
    return json.loads(sidecar.read_text()).get("gradient") if sidecar.exists() else None


def export_vjp(
    model: Any,
    onnx_path: Path,
    vjp_path: Path,
    inputs: np.ndarray,
    tolerance: float = GRAD_TOLERANCE,
    fd_tolerance: float = FD_TOLERANCE,
) -> dict[str, Any]:
    """Write the VJP of ``onnx_path`` to ``vjp_path``; check it; return its sidecar entry.

    Checked in onnxruntime with a seeded random cotangent: against ``tf.GradientTape`` of
    ``model`` on all ``inputs``, and against float64 central differences of the ONNX model
    on the first :data:`FD_SAMPLES` (plus tie-breaking noise). A failed check removes the file.
    """
    import onnx

    from ..gradients import build_vjp

    forward = onnx.load(str(onnx_path))
    onnx.save(build_vjp(forward), str(vjp_path))
    try:
        difference, fd_error = _vjp_errors(model, forward, vjp_path, inputs)
    except Exception as error:
        vjp_path.unlink(missing_ok=True)
        raise ExportCheckFailed(f"{vjp_path.name} does not run in onnxruntime: {error}") from error
    failure = _vjp_failure(difference, fd_error, tolerance, fd_tolerance, len(inputs))
    if failure:
        vjp_path.unlink(missing_ok=True)
        raise ExportCheckFailed(f"{vjp_path.name} {failure}")
    return {
        "file": vjp_path.name,
        "checked_against": "keras autodiff (tf.GradientTape)",
        "max_abs_difference": difference,
        "max_relative_error_fd64": fd_error,
        "samples": len(inputs),
    }


def _vjp_errors(
    model: Any, forward: Any, vjp_path: Path, inputs: np.ndarray
) -> tuple[float, float]:
    """(max |VJP - GradientTape| on ``inputs``, relative error against float64 differences)."""
    from ..gradients import fd_relative_error

    rng = np.random.default_rng(0)
    cotangent = rng.standard_normal((len(inputs), *model.outputs[0].shape[1:]))
    cotangent = cotangent.astype(np.float32)
    served = run_vjp(vjp_path, inputs, cotangent)
    difference = float(np.max(np.abs(served - tape_vjp(model, inputs, cotangent))))
    probe = inputs[:FD_SAMPLES] + rng.uniform(0, TIE_BREAKING_NOISE, inputs[:FD_SAMPLES].shape)
    probe = probe.astype(np.float32)
    grad = run_vjp(vjp_path, probe, cotangent[: len(probe)])
    fd_error = fd_relative_error(
        forward, {INPUT_NAME: probe}, {OUTPUT_NAME: cotangent[: len(probe)]}, {INPUT_NAME: grad}
    )
    return difference, fd_error


def _vjp_failure(
    difference: float, fd_error: float, tolerance: float, fd_tolerance: float, samples: int
) -> str:
    """What a failed gradient check says ("" when both pass)."""
    if not difference <= tolerance:
        return (
            f"differs from tf.GradientTape by {difference:.3g} on {samples} samples; "
            f"the tolerance is {tolerance:g}"
        )
    if not fd_error <= fd_tolerance:
        return (
            f"differs from float64 central differences by a relative {fd_error:.3g}; "
            f"the tolerance is {fd_tolerance:g}"
        )
    return ""


def run_vjp(path: Path, inputs: np.ndarray, cotangent: np.ndarray) -> np.ndarray:
    """The gradient a VJP file gives in onnxruntime: J(inputs)ᵀ · cotangent."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {INPUT_NAME: inputs, cotangent_name(OUTPUT_NAME): cotangent}
    return session.run([gradient_name(INPUT_NAME)], feeds)[0]


def tape_vjp(model: Any, inputs: np.ndarray, cotangent: np.ndarray) -> np.ndarray:
    """Keras' own gradient: tf.GradientTape through ``model(inputs, training=False)``."""
    x = tf.convert_to_tensor(inputs)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = model(x, training=False)
    return tape.gradient(y, x, output_gradients=tf.convert_to_tensor(cotangent)).numpy()
