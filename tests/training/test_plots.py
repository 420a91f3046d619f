"""The training curves PNG: drawn from a report, and written by `mlbridge train` beside it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.training
image = pytest.importorskip("matplotlib.image")

from mlbridge.training.plots import DPI, SIZE_INCHES, curves_path, write_curves  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TRAINING_BLUE = (0x1F, 0x77, 0xB4)  # matplotlib's first colour: the training curves
VALIDATION_ORANGE = (0xFF, 0x7F, 0x0E)  # its second: the validation curves


def report(validation: bool = True) -> dict:
    rows = [
        {
            "epoch": epoch,
            "loss": 2.0 / epoch,
            "accuracy": 1 - 0.5 / epoch,
            "val_loss": 2.2 / epoch if validation else None,
            "val_accuracy": 1 - 0.6 / epoch if validation else None,
            "seconds": 1.0,
        }
        for epoch in (1, 2, 3)
    ]
    return {"name": "mnist-mlp", "history": rows, "heldout_accuracy": 0.9535}


def pixels(path: Path) -> np.ndarray:
    """The PNG's RGB pixels as 0..255 integers."""
    return np.rint(image.imread(path)[..., :3] * 255).astype(int)


def has_colour(rgb: np.ndarray, colour: tuple[int, int, int]) -> bool:
    return bool((np.abs(rgb - np.array(colour)).sum(axis=-1) <= 6).any())


def test_curves_are_a_png_of_the_documented_size(tmp_path: Path) -> None:
    path = write_curves(report(), tmp_path / "mnist-mlp.curves.png")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    rgb = pixels(path)
    assert rgb.shape[:2] == (SIZE_INCHES[1] * DPI, SIZE_INCHES[0] * DPI)
    assert has_colour(rgb, TRAINING_BLUE) and has_colour(rgb, VALIDATION_ORANGE)


def test_epochs_without_validation_draw_only_the_training_curves(tmp_path: Path) -> None:
    rgb = pixels(write_curves(report(validation=False), tmp_path / "curves.png"))
    assert has_colour(rgb, TRAINING_BLUE) and not has_colour(rgb, VALIDATION_ORANGE)


def test_curves_live_beside_the_report() -> None:
    assert curves_path(Path("out/mnist-mlp-asinh.report.json")) == Path(
        "out/mnist-mlp-asinh.curves.png"
    )


def test_train_writes_the_curves_beside_its_report(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    from training_helpers import run_cli, write_cifar_batches

    data = write_cifar_batches(tmp_path / "cifar-10-batches-py", 1, 64)
    printed = run_cli("train", "cifar10-cnn", "--data", data, "--out", tmp_path, "--epochs", 2)
    written = json.loads((tmp_path / "cifar10-cnn.report.json").read_text())
    assert written["curves_file"] == "cifar10-cnn.curves.png"
    assert "curves            cifar10-cnn.curves.png" in printed
    rgb = pixels(tmp_path / "cifar10-cnn.curves.png")
    assert has_colour(rgb, TRAINING_BLUE) and has_colour(rgb, VALIDATION_ORANGE)
