"""The bundled JAX demo functions: box_volume and lj13, as the server would run them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

DEMO = Path(__file__).resolve().parents[2] / "mlbridge" / "demo_models"
LJ13_MINIMUM = -44.326801  # also in lennard_jones.py; repeated so this module needs no JAX


class ServedFunction:
    """A bundled function's value and gradient, through onnxruntime only."""

    def __init__(self, name: str) -> None:
        self.sidecar = json.loads((DEMO / f"{name}.json").read_text())
        self.value_session = _session(DEMO / self.sidecar["exports"]["onnx"]["file"])
        self.vjp_session = _session(DEMO / self.sidecar["gradient"]["file"])
        self.input = self.sidecar["inputs"][0]["name"]

    def value(self, x: np.ndarray) -> np.ndarray:
        return self.value_session.run(["output"], {self.input: x})[0]

    def gradient(self, x: np.ndarray) -> np.ndarray:
        feeds = {self.input: x, "output_cotangent": np.ones(len(x))}
        return self.vjp_session.run([f"{self.input}_grad"], feeds)[0]


def _session(path: Path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_box_volume_value_and_gradient_without_jax() -> None:
    box = ServedFunction("box_volume")
    sides = np.array([[2.0, 4.0, 8.0]])
    assert box.value(sides).tolist() == [64.0]
    assert box.gradient(sides).tolist() == [[32.0, 16.0, 8.0]]
    assert box.sidecar["inputs"] == [{"name": "sides", "datatype": "FP64", "shape": [-1, 3]}]


@pytest.mark.functions
def test_box_volume_files_agree_with_jax_exactly() -> None:
    import jax

    from mlbridge.demo_functions.box_volume import box_volume

    box = ServedFunction("box_volume")
    sides = np.array([[2.0, 4.0, 8.0], [1.5, -3.0, 0.25]])
    with jax.enable_x64(True):
        expected = np.asarray(jax.vmap(box_volume)(sides))
        expected_gradient = np.asarray(jax.vmap(jax.grad(box_volume))(sides))
    np.testing.assert_array_equal(box.value(sides), expected)
    np.testing.assert_array_equal(box.gradient(sides), expected_gradient)
    np.testing.assert_array_equal(expected_gradient[0], [32.0, 16.0, 8.0])


@pytest.fixture
def start() -> np.ndarray:
    """A seeded, randomly perturbed 13-atom icosahedron."""
    from mlbridge.demo_functions.lennard_jones import icosahedron

    return icosahedron() + np.random.default_rng(13).normal(scale=0.1, size=(13, 3))


@pytest.mark.functions
def test_lj13_files_agree_with_jax_on_a_perturbed_icosahedron(start: np.ndarray) -> None:
    import jax

    from mlbridge.demo_functions.lennard_jones import lennard_jones

    lj13 = ServedFunction("lj13")
    positions = np.stack([start, 1.02 * start])
    with jax.enable_x64(True):
        expected = np.asarray(jax.vmap(lennard_jones)(positions))
        expected_gradient = np.asarray(jax.vmap(jax.grad(lennard_jones))(positions))
    assert np.all(np.isfinite(expected_gradient))
    np.testing.assert_allclose(lj13.value(positions), expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(lj13.gradient(positions), expected_gradient, rtol=0, atol=1e-9)


@pytest.mark.functions
def test_lbfgs_on_lj13_from_onnxruntime_finds_the_icosahedral_minimum(start: np.ndarray) -> None:
    from scipy.optimize import minimize

    lj13 = ServedFunction("lj13")

    def energy_and_gradient(flat: np.ndarray) -> tuple[float, np.ndarray]:
        positions = flat.reshape(1, 13, 3)
        return float(lj13.value(positions)[0]), lj13.gradient(positions).ravel()

    result = minimize(energy_and_gradient, start.ravel(), jac=True, method="L-BFGS-B")
    assert result.success, result.message
    assert result.fun == pytest.approx(LJ13_MINIMUM, abs=1e-4)
