"""A .keras file with the EvidenceTweakingLayer is served directly by the Keras runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support import start_server

pytestmark = pytest.mark.training


def test_keras_file_served_like_any_model(tmp_path: Path, mnist) -> None:
    from mlbridge.client import Client
    from mlbridge.training.models import build_model

    model = build_model("mnist-mlp", evidence="atan")
    model.save(tmp_path / "tweaked.keras")
    images = mnist[0][:16]
    expected = np.asarray(model(images, training=False))
    server = start_server(tmp_path / "home", "--strict", str(tmp_path / "tweaked.keras"))
    try:
        with Client(home=server.home) as client:
            meta = client.metadata("tweaked")
            assert meta["platform"] == "keras"
            assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 28, 28]}]
            np.testing.assert_allclose(client.predict("tweaked", images), expected, atol=1e-5)
    finally:
        server.stop()
