"""`mlbridge export --grad`: the VJP beside the ONNX file, checked again here independently."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

pytestmark = pytest.mark.training
keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")

from training_helpers import run_cli  # noqa: E402

from mlbridge.errors import ExportCheckFailed  # noqa: E402
from mlbridge.gradients import to_float64  # noqa: E402
from mlbridge.model_config import read_model_config  # noqa: E402
from mlbridge.training.data import load_mnist  # noqa: E402
from mlbridge.training.export_grad import export_vjp, run_vjp, tape_vjp  # noqa: E402
from mlbridge.training.train import load_model  # noqa: E402

VARIANTS = [("mnist-mlp", None), ("mnist-cnn", None), ("mnist-mlp", "asinh"), ("mnist-mlp", "atan")]
GRADIENT_KEYS = {
    "file",
    "checked_against",
    "max_abs_difference",
    "max_relative_error_fd64",
    "samples",
}
TAPE_TOLERANCE = 1e-5
FD_TOLERANCE = 1e-3
FD_STEP = 1e-7  # models with ReLU and MaxPool are piecewise linear: larger steps cross kinks
NOISE = 1e-3  # breaks the MaxPool ties of blank MNIST regions, where no derivative exists


@pytest.fixture(scope="module")
def heldout(mnist_dir: Path) -> np.ndarray:
    """Held-out images 8000..8063, scaled to [0, 1]."""
    return load_mnist(mnist_dir).scaled().x_heldout[:64]


@pytest.fixture(scope="module", params=VARIANTS, ids=lambda v: "-".join(filter(None, v)))
def exported(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path
) -> tuple[Path, Path, str]:
    """(the .keras file, the export folder, what export printed): 1 epoch on 300 images."""
    arch, evidence = request.param
    work = tmp_path_factory.mktemp("grad")
    extra = ["--evidence", evidence] if evidence else []
    run_cli(
        "train", arch, *extra, "--data", mnist_dir, "--out", work,
        "--epochs", 1, "--limit", 300, "--learning-rate", 1e-3,
    )  # fmt: skip
    keras_file = work / (f"{arch}-{evidence}.keras" if evidence else f"{arch}.keras")
    out = work / "export"
    printed = run_cli(
        "export", keras_file, "--to", "onnx", "--grad", "--data", mnist_dir,
        "--out", out, "--name", "model",
    )  # fmt: skip
    return keras_file, out, printed


def test_sidecar_records_the_checked_gradient(exported) -> None:
    _, out, printed = exported
    gradient = json.loads((out / "model.json").read_text())["gradient"]
    assert set(gradient) == GRADIENT_KEYS
    assert gradient["file"] == "model.vjp.onnx" and (out / "model.vjp.onnx").is_file()
    assert gradient["checked_against"] == "keras autodiff (tf.GradientTape)"
    assert gradient["samples"] == 256
    assert 0 <= gradient["max_abs_difference"] <= TAPE_TOLERANCE
    assert 0 <= gradient["max_relative_error_fd64"] <= FD_TOLERANCE
    assert "model.vjp.onnx: max |difference| from tf.GradientTape" in printed
    # The server reads the sidecar as the model's config and finds the companion through it.
    assert read_model_config(out / "model.json").gradient.file == "model.vjp.onnx"


def test_vjp_matches_gradient_tape(exported, heldout: np.ndarray) -> None:
    keras_file, out, _ = exported
    cotangent = np.random.default_rng(7).standard_normal((len(heldout), 10)).astype(np.float32)
    served = run_vjp(out / "model.vjp.onnx", heldout, cotangent)
    expected = tape_vjp(load_model(keras_file), heldout, cotangent)
    assert served.shape == heldout.shape
    assert np.max(np.abs(served - expected)) <= TAPE_TOLERANCE
    assert np.max(np.abs(expected)) > 1e-3  # not vacuous: the gradient is not zero


def test_vjp_matches_float64_central_differences(exported, heldout: np.ndarray) -> None:
    _, out, _ = exported
    rng = np.random.default_rng(8)
    images = (heldout[:8] + rng.uniform(0, NOISE, heldout[:8].shape)).astype(np.float32)
    cotangent = rng.standard_normal((len(images), 10))
    grad = run_vjp(out / "model.vjp.onnx", images, cotangent.astype(np.float32))
    assert directional_error(out / "model.onnx", images, cotangent, grad, rng) <= FD_TOLERANCE


def directional_error(path: Path, x: np.ndarray, dy: np.ndarray, grad: np.ndarray, rng) -> float:
    """Largest |grad·v - FD₆₄ along v| / ‖grad‖ over v = grad/‖grad‖ and two random units."""
    evaluator = ReferenceEvaluator(to_float64(onnx.load(path)))
    x, grad = x.astype(np.float64), grad.astype(np.float64)

    def weighted(point: np.ndarray) -> float:
        return float(np.sum(evaluator.run(None, {"input": point})[0] * dy))

    errors = []
    for v in (grad, rng.standard_normal(x.shape), rng.standard_normal(x.shape)):
        v = v / np.linalg.norm(v)
        fd = (weighted(x + FD_STEP * v) - weighted(x - FD_STEP * v)) / (2 * FD_STEP)
        errors.append(abs(np.sum(grad * v) - fd) / np.linalg.norm(grad))
    return max(errors)


@pytest.fixture(scope="module")
def untrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained mnist-mlp saved as .keras: enough for the flag and file-handling tests."""
    from mlbridge.training.models import build_model

    path = tmp_path_factory.mktemp("untrained") / "mlp.keras"
    build_model("mnist-mlp").save(path)
    return path


def test_grad_without_onnx_is_refused(untrained: Path, tmp_path: Path) -> None:
    printed = run_cli("export", untrained, "--to", "tflite", "--grad", "--out", tmp_path, expect=1)
    assert "--grad builds NAME.vjp.onnx from the ONNX export" in printed
    assert "Traceback" not in printed and not list(tmp_path.iterdir())


def test_failed_gradient_check_removes_the_file(untrained: Path, heldout, tmp_path: Path) -> None:
    run_cli("export", untrained, "--to", "onnx", "--out", tmp_path, "--name", "m")
    vjp = tmp_path / "m.vjp.onnx"
    with pytest.raises(ExportCheckFailed, match=r"differs from tf\.GradientTape by"):
        export_vjp(load_model(untrained), tmp_path / "m.onnx", vjp, heldout, tolerance=1e-15)
    assert not vjp.exists()


def test_reexport_without_grad_drops_the_stale_vjp(untrained: Path, tmp_path: Path) -> None:
    args = ("export", untrained, "--to", "onnx", "--out", tmp_path, "--name", "m")
    run_cli(*args, "--grad")
    assert json.loads((tmp_path / "m.json").read_text())["gradient"]["samples"] == 256
    run_cli(*args)
    assert not (tmp_path / "m.vjp.onnx").exists()
    assert "gradient" not in json.loads((tmp_path / "m.json").read_text())
