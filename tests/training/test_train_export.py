"""Train, save, reload, export and serve: the reference models end to end (needs TensorFlow)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.training
keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")

from support import MNIST_DIR, start_server  # noqa: E402
from training_helpers import infer, run_cli, write_cifar_batches  # noqa: E402

from mlbridge.training.data import load_mnist  # noqa: E402
from mlbridge.training.export import run_onnx, run_tflite  # noqa: E402
from mlbridge.training.train import load_model  # noqa: E402

EVIDENCE = ("asinh", "atan")
REPORT_FIELDS = {
    "architecture",
    "parameters",
    "epochs",
    "history",
    "heldout_accuracy",
    "seconds_per_epoch",
    "versions",
    "labels",
    "learning_rate",
    "batch_size",
    "seed",
}
EPOCH_FIELDS = {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"}
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def heldout(mnist_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The first 256 held-out images (8000..8255), scaled, and their labels."""
    data = load_mnist(mnist_dir).scaled()
    return data.x_heldout[:256], data.y_heldout[:256]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("train")


@pytest.fixture(scope="module", params=EVIDENCE)
def evidence_model(request: pytest.FixtureRequest, workdir: Path, mnist_dir: Path) -> Path:
    """mnist-mlp + EvidenceTweakingLayer: 2 epochs (Adam 1e-3) on 2,000 images, by the CLI."""
    run_cli(
        "train",
        "mnist-mlp",
        "--evidence",
        request.param,
        "--data",
        mnist_dir,
        "--out",
        workdir,
        "--epochs",
        2,
        "--limit",
        2000,
        "--seed",
        1,
        "--learning-rate",
        1e-3,
    )
    return workdir / f"mnist-mlp-{request.param}.keras"


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two synthetic CIFAR-10 training batches and a test batch, 64 images each."""
    return write_cifar_batches(tmp_path_factory.mktemp("cifar") / "cifar-10-batches-py", 2, 64)


def test_report_has_every_field(evidence_model: Path) -> None:
    report = json.loads(evidence_model.with_name(f"{evidence_model.stem}.report.json").read_text())
    assert set(report) >= REPORT_FIELDS
    assert report["architecture"] == "mnist-mlp" and report["parameters"] == 47_410 + 2
    assert report["epochs"] == 2 and len(report["history"]) == 2
    assert all(set(row) >= EPOCH_FIELDS for row in report["history"])
    assert len(report["seconds_per_epoch"]) == 2 and min(report["seconds_per_epoch"]) > 0
    assert (report["train_size"], report["validation_size"], report["heldout_size"]) == (
        1800,
        200,
        2000,
    )
    assert 0.5 < report["heldout_accuracy"] <= 1.0  # 2 epochs on 1,800 images: well above chance
    assert {"tensorflow", "keras", "numpy", "python", "mlbridge"} <= set(report["versions"])


def test_fresh_process_loads_without_custom_objects(
    evidence_model: Path, heldout, tmp_path
) -> None:
    images, _ = heldout
    np.save(tmp_path / "images.npy", images)
    expected = np.asarray(load_model(evidence_model)(images, training=False))
    script = (
        "import sys, numpy as np, keras\n"
        "import mlbridge.training.layers  # registers the layer, as docs/training.md says\n"
        "model = keras.models.load_model(sys.argv[1])\n"
        "assert type(model.layers[-1]).__name__ == 'EvidenceTweakingLayer'\n"
        "np.save(sys.argv[3], np.asarray(model(np.load(sys.argv[2]), training=False)))\n"
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            evidence_model,
            tmp_path / "images.npy",
            tmp_path / "out.npy",
        ],
        check=True,
        capture_output=True,
    )
    assert np.array_equal(np.load(tmp_path / "out.npy"), expected)


def test_saved_outputs_equal_the_outputs_before_saving(tmp_path: Path, heldout) -> None:
    from mlbridge.training.models import build_model
    from mlbridge.training.train import compile_model

    images, labels = heldout
    model = build_model("mnist-mlp", "atan")
    compile_model(model)
    model.fit(images, labels, epochs=1, verbose=0)
    before = np.asarray(model(images, training=False))
    model.save(tmp_path / "m.keras")
    after = np.asarray(load_model(tmp_path / "m.keras")(images, training=False))
    assert np.array_equal(before, after)


def test_export_matches_keras_and_serves(evidence_model: Path, heldout, tmp_path: Path) -> None:
    images, _ = heldout
    out = tmp_path / "export"
    printed = run_cli(
        "export",
        evidence_model,
        "--to",
        "onnx,tflite",
        "--data",
        MNIST_DIR,
        "--out",
        out,
        "--name",
        "evidence",
    )
    assert "evidence.onnx: max |difference|" in printed and "evidence.tflite" in printed
    sidecar = json.loads((out / "evidence.json").read_text())
    assert sidecar["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 28, 28]}]
    assert sidecar["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 10]}]
    assert sidecar["labels"] == [str(d) for d in range(10)]
    assert all(sidecar["exports"][f]["max_abs_difference"] <= TOLERANCE for f in ("onnx", "tflite"))
    expected = np.asarray(load_model(evidence_model)(images, training=False))
    for runner, path in ((run_onnx, out / "evidence.onnx"), (run_tflite, out / "evidence.tflite")):
        np.testing.assert_allclose(runner(path, images), expected, atol=TOLERANCE, rtol=0)
    # The server names a file by its stem: the TFLite twin gets its own stem and sidecar.
    shutil.copy(out / "evidence.tflite", out / "evidence-tflite.tflite")
    shutil.copy(out / "evidence.json", out / "evidence-tflite.json")
    server = start_server(
        tmp_path / "home", "--strict", out / "evidence.onnx", out / "evidence-tflite.tflite"
    )
    try:
        for name in ("evidence", "evidence-tflite"):
            served = infer(server, name, images[:32])
            np.testing.assert_allclose(served, expected[:32], atol=TOLERANCE, rtol=0)
            assert np.array_equal(served.argmax(1), expected[:32].argmax(1))
    finally:
        server.stop()


def test_export_from_saved_model_folder(
    workdir: Path, evidence_model: Path, tmp_path: Path
) -> None:
    saved = tmp_path / "saved"
    load_model(evidence_model).export(str(saved), verbose=False)
    run_cli("export", saved, "--to", "onnx,tflite", "--out", tmp_path, "--name", "from-saved")
    sidecar = json.loads((tmp_path / "from-saved.json").read_text())
    assert sidecar["inputs"][0]["shape"] == [-1, 28, 28]
    assert max(e["max_abs_difference"] for e in sidecar["exports"].values()) <= TOLERANCE


def test_export_above_tolerance_fails_and_leaves_no_file(evidence_model: Path, tmp_path) -> None:
    printed = run_cli(
        "export",
        evidence_model,
        "--to",
        "onnx",
        "--out",
        tmp_path,
        "--tolerance",
        "1e-15",
        expect=1,
    )
    assert "differs from Keras by" in printed and "Traceback" not in printed
    assert not list(tmp_path.glob("*.onnx"))


def test_cifar10_synthetic_end_to_end(cifar_dir: Path, tmp_path: Path) -> None:
    printed = run_cli("train", "cifar10-cnn", "--data", cifar_dir, "--out", tmp_path, "--epochs", 1)
    assert "held-out accuracy" in printed
    report = json.loads((tmp_path / "cifar10-cnn.report.json").read_text())
    assert report["train_size"] + report["validation_size"] == 128 and report["heldout_size"] == 64
    run_cli(
        "export",
        tmp_path / "cifar10-cnn.keras",
        "--to",
        "onnx,tflite",
        "--data",
        cifar_dir,
        "--samples",
        64,
        "--out",
        tmp_path / "served",
        "--name",
        "cifar",
    )
    served = tmp_path / "served"
    shutil.copy(served / "cifar.tflite", served / "cifar-tflite.tflite")
    shutil.copy(served / "cifar.json", served / "cifar-tflite.json")
    from mlbridge.training.data import load_cifar10

    images = load_cifar10(cifar_dir).scaled().x_heldout[:8]
    expected = np.asarray(load_model(tmp_path / "cifar10-cnn.keras")(images, training=False))
    server = start_server(
        tmp_path / "home", "--strict", served / "cifar.onnx", served / "cifar-tflite.tflite"
    )
    try:
        import httpx

        meta = httpx.get(f"{server.url}/v2/models/cifar", headers=server.auth).json()
        assert meta["parameters"]["labels"][:2] == ["airplane", "automobile"]
        assert meta["inputs"][0]["shape"] == [-1, 32, 32, 3]
        for name in ("cifar", "cifar-tflite"):
            np.testing.assert_allclose(
                infer(server, name, images), expected, atol=TOLERANCE, rtol=0
            )
    finally:
        server.stop()


@pytest.mark.parametrize(("arch", "floor"), [("mnist-mlp", 0.93), ("mnist-cnn", 0.97)])
def test_default_epochs_meet_the_floor(
    tmp_path: Path, mnist_dir: Path, arch: str, floor: float
) -> None:
    """The acceptance floors, trained from scratch (~25 s MLP, ~70 s CNN on 2 cores)."""
    run_cli("train", arch, "--data", mnist_dir, "--out", tmp_path)
    report = json.loads((tmp_path / f"{arch}.report.json").read_text())
    assert report["epochs"] >= 4 and report["heldout_accuracy"] >= floor


def test_export_from_legacy_h5(evidence_model: Path, tmp_path: Path) -> None:
    load_model(evidence_model).save(tmp_path / "legacy.h5")
    printed = run_cli("export", tmp_path / "legacy.h5", "--to", "onnx", "--data", MNIST_DIR)
    assert "legacy.onnx: max |difference|" in printed
    assert json.loads((tmp_path / "legacy.json").read_text())["exports"]["onnx"]["samples"] == 256
