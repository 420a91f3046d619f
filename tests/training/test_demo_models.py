"""The bundled demo models: the held-out floors, their sidecars, and what the server reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

DEMO = Path(__file__).resolve().parents[2] / "mlbridge" / "demo_models"
FLOORS = {"mnist": ("mnist-mlp", 0.93), "mnist-cnn": ("mnist-cnn", 0.97)}
SIDECAR_KEYS = {"labels", "inputs", "outputs", "description", "architecture", "heldout_accuracy"}


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_demo_model_meets_its_floor_on_the_heldout_images(name: str, mnist) -> None:
    images, labels = mnist
    session = onnxruntime.InferenceSession(
        str(DEMO / f"{name}.onnx"), providers=["CPUExecutionProvider"]
    )
    (logits,) = session.run(["output"], {"input": images})
    accuracy = float(np.mean(logits.argmax(1) == labels))
    sidecar = json.loads((DEMO / f"{name}.json").read_text())
    architecture, floor = FLOORS[name]
    assert accuracy >= floor
    assert sidecar["heldout_accuracy"] == pytest.approx(accuracy, abs=1e-4)
    assert sidecar["architecture"] == architecture


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_demo_sidecar_declares_the_served_signature(name: str) -> None:
    sidecar = json.loads((DEMO / f"{name}.json").read_text())
    assert set(sidecar) >= SIDECAR_KEYS
    assert sidecar["labels"] == [str(d) for d in range(10)]
    assert sidecar["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 28, 28]}]
    assert sidecar["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 10]}]
    session = onnxruntime.InferenceSession(
        str(DEMO / f"{name}.onnx"), providers=["CPUExecutionProvider"]
    )
    (declared,), (answer,) = session.get_inputs(), session.get_outputs()
    assert (declared.name, answer.name) == ("input", "output")
    assert isinstance(declared.shape[0], str) and declared.shape[1:] == [28, 28]


def test_demo_models_stay_small() -> None:
    assert sum(p.stat().st_size for p in DEMO.glob("*.onnx")) < 2_000_000
